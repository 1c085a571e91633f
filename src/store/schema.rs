//! Schema versions: comparing what a database has applied with the
//! migrations built into this binary, before sqlx touches anything.
//!
//! sqlx's migrator would refuse the same situations, but with messages
//! about migration numbers that do not tell an operator what to do. This
//! check runs first and says it plainly; it is pure so that every case is
//! a unit test.

use super::error::StoreError;

/// One row of `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// One migration built into the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedded<'a> {
    pub version: i64,
    pub description: &'a str,
    pub checksum: &'a [u8],
}

/// Refuses a database this binary must not run on: one migrated by a newer
/// mdgate, one with a half-applied or unknown migration, or one whose
/// applied migration differs from ours. `Ok` means the migrator may apply
/// the missing migrations.
pub fn check_applied(applied: &[Applied], embedded: &[Embedded<'_>]) -> Result<(), StoreError> {
    let supported = embedded.iter().map(|m| m.version).max().unwrap_or(0);
    let found = applied.iter().map(|m| m.version).max().unwrap_or(0);
    // First, so that a downgrade gets the upgrade/restore advice rather
    // than a complaint about some unknown migration.
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for a in applied {
        if !a.success {
            return Err(StoreError::Migration {
                reason: format!(
                    "migration {} was left partially applied; restore the backup taken \
                     before the upgrade",
                    a.version
                ),
            });
        }
        let Some(ours) = embedded.iter().find(|m| m.version == a.version) else {
            return Err(StoreError::Migration {
                reason: format!(
                    "the database has migration {} applied, which this mdgate does not \
                     know; it was not created by a released mdgate",
                    a.version
                ),
            });
        };
        if ours.checksum != a.checksum.as_slice() {
            return Err(StoreError::MigrationModified {
                version: a.version,
                description: ours.description.to_owned(),
            });
        }
    }
    Ok(())
}

/// The schema version a set of applied migrations amounts to.
pub fn current_version(applied: &[Applied]) -> i64 {
    applied
        .iter()
        .filter(|m| m.success)
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMBEDDED: &[Embedded<'static>] = &[
        Embedded {
            version: 1,
            description: "initial schema",
            checksum: b"one",
        },
        Embedded {
            version: 2,
            description: "more",
            checksum: b"two",
        },
        Embedded {
            version: 3,
            description: "even more",
            checksum: b"three",
        },
    ];

    fn applied(v: &[(i64, &[u8])]) -> Vec<Applied> {
        v.iter()
            .map(|(version, sum)| Applied {
                version: *version,
                checksum: sum.to_vec(),
                success: true,
            })
            .collect()
    }

    #[test]
    fn fresh_and_partial_databases_may_migrate() {
        assert!(check_applied(&[], EMBEDDED).is_ok());
        let a = applied(&[(1, b"one"), (2, b"two")]);
        assert!(check_applied(&a, EMBEDDED).is_ok());
        assert_eq!(current_version(&a), 2);
        assert_eq!(current_version(&[]), 0);
    }

    #[test]
    fn newer_schema_is_refused_with_versions() {
        let a = applied(&[(1, b"one"), (7, b"seven")]);
        match check_applied(&a, EMBEDDED) {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (7, 3));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn modified_migration_is_refused_by_name() {
        let a = applied(&[(1, b"one"), (2, b"TWO")]);
        match check_applied(&a, EMBEDDED) {
            Err(e @ StoreError::MigrationModified { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("migration 2 (more)"), "{msg}");
                assert!(msg.contains("checksum mismatch"), "{msg}");
            }
            other => panic!("expected MigrationModified, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_dirty_migrations_are_refused() {
        let gap = [(1, b"one" as &[u8]), (3, b"three")];
        let embedded = [EMBEDDED[0], EMBEDDED[1]];
        let mut a = applied(&gap);
        // Version 3 is above what `embedded` supports: too new.
        assert!(matches!(
            check_applied(&a, &embedded),
            Err(StoreError::SchemaTooNew { .. })
        ));
        // An unknown version inside the supported range.
        let sparse = [EMBEDDED[0], EMBEDDED[2]];
        a = applied(&[(1, b"one"), (2, b"two")]);
        let e = check_applied(&a, &sparse).unwrap_err();
        assert!(e.to_string().contains("does not know"), "{e}");
        // A half-applied migration.
        a[1].success = false;
        let e = check_applied(&a, EMBEDDED).unwrap_err();
        assert!(e.to_string().contains("partially applied"), "{e}");
    }
}
