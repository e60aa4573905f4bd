//! Schema migrations behave the same on every backend.
#![allow(clippy::unwrap_used)]

use wireleap_store::testing::backends;
use wireleap_store::{Compat, Migration, StoreError};

const V1: Migration = Migration {
    version: 1,
    name: "items",
    compat: Compat::Breaking,
    sqlite: "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL);\n",
    postgres: "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL);\n",
};
const V2: Migration = Migration {
    version: 2,
    name: "items_note",
    compat: Compat::Expand,
    sqlite: "ALTER TABLE items ADD COLUMN note TEXT;\n",
    postgres: "ALTER TABLE items ADD COLUMN note TEXT;\n",
};
/// Replaces a column: builds before it must not use the database.
const V3_BREAKING: Migration = Migration {
    version: 3,
    name: "items_rename",
    compat: Compat::Breaking,
    sqlite: "ALTER TABLE items RENAME COLUMN name TO title;\n",
    postgres: "ALTER TABLE items RENAME COLUMN name TO title;\n",
};
const BROKEN: Migration = Migration {
    version: 3,
    name: "broken",
    compat: Compat::Expand,
    sqlite: "CREATE TABLE t3 (a INT);\nTHIS IS NOT SQL;\n",
    postgres: "CREATE TABLE t3 (a INT);\nTHIS IS NOT SQL;\n",
};

/// Migrating `component` to V3 (breaking) in a hand-over is refused and leaves its schema
/// at `stays`.
async fn refused_in_hand_over(
    db: &wireleap_store::Db,
    component: &'static str,
    stays: i64,
    backend: &str,
) {
    let err = db
        .migrate_with(component, &[V1, V2, V3_BREAKING], true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::BreakingDuringHandover { version: 3, .. }),
        "{backend}: {err}"
    );
    assert_eq!(
        db.schema_version(component).await.unwrap(),
        stays,
        "{backend}"
    );
}

/// `sql` must fail (what it reads does not exist).
async fn assert_fails(db: &wireleap_store::Db, sql: &str, backend: &str) {
    assert!(
        sqlx::query(sql).fetch_all(db.pool()).await.is_err(),
        "{backend}: {sql} worked"
    );
}

#[tokio::test]
async fn migrations_apply_once_in_order_and_atomically() {
    for t in backends().await.unwrap() {
        let db = &t.db;
        db.migrate("demo", &[V1]).await.unwrap();
        assert_eq!(db.schema_version("demo").await.unwrap(), 1, "{}", t.name);
        // Re-running is a no-op; adding V2 applies only V2.
        db.migrate("demo", &[V1, V2]).await.unwrap();
        db.migrate("demo", &[V1, V2]).await.unwrap();
        assert_eq!(db.schema_version("demo").await.unwrap(), 2, "{}", t.name);
        sqlx::query("INSERT INTO items (id, name, note) VALUES ($1, $2, $3)")
            .bind(1i64)
            .bind("a")
            .bind("n")
            .execute(db.pool())
            .await
            .unwrap();

        // A failing migration leaves nothing behind: not its table, not its version.
        let err = db.migrate("demo", &[V1, V2, BROKEN]).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version: 3, .. }),
            "{}: {err}",
            t.name
        );
        assert_eq!(db.schema_version("demo").await.unwrap(), 2, "{}", t.name);
        // Not half-applied: its table is not there.
        assert_fails(db, "SELECT * FROM t3", t.name).await;

        // A build that knows only V1 keeps using a database V2 merely added to (what a
        // rolled-back upgrade needs)...
        db.migrate("demo", &[V1]).await.unwrap();
        sqlx::query("INSERT INTO items (id, name) VALUES ($1, $2)")
            .bind(2i64)
            .bind("from the older build")
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(db.schema_version("demo").await.unwrap(), 2, "{}", t.name);

        // ...but a breaking migration is refused while the previous process of a hand-over
        // still runs on the database, with nothing written...
        refused_in_hand_over(db, "demo", 2, t.name).await;
        // ...and applied when the service was stopped first; after it, older builds refuse
        // the database instead of writing into it.
        db.migrate_with("demo", &[V1, V2, V3_BREAKING], false)
            .await
            .unwrap();
        for older in [&[V1][..], &[V1, V2][..]] {
            let err = db.migrate("demo", older).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::SchemaTooNew {
                        found: 3,
                        floor: 3,
                        ..
                    }
                ),
                "{}: {err}",
                t.name
            );
        }
        // A later expanding migration keeps the floor where the breaking one put it.
        const V4: Migration = Migration {
            version: 4,
            name: "items_index",
            compat: Compat::Expand,
            sqlite: "CREATE INDEX items_title ON items (title);\n",
            postgres: "CREATE INDEX items_title ON items (title);\n",
        };
        db.migrate_with("demo", &[V1, V2, V3_BREAKING, V4], true)
            .await
            .unwrap();
        db.migrate("demo", &[V1, V2, V3_BREAKING]).await.unwrap();
        let err = db.migrate("demo", &[V1, V2]).await.unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { floor: 3, .. }),
            "{}: {err}",
            t.name
        );
    }
}

/// In a hand-over's new process, a pending breaking migration is refused before anything is
/// written, the expanding ones before it included.
#[tokio::test]
async fn a_breaking_migration_behind_expanding_ones_is_refused_before_any_of_them() {
    for t in backends().await.unwrap() {
        let db = &t.db;
        db.migrate("mixed", &[V1]).await.unwrap();
        refused_in_hand_over(db, "mixed", 1, t.name).await;
        // V2 did not run: its column is not there.
        assert_fails(db, "SELECT note FROM items", t.name).await;
    }
}

/// A database migrated by a build from before the floor was recorded: only builds that know
/// its version may use it.
#[tokio::test]
async fn a_database_without_a_recorded_floor_is_used_only_by_builds_that_know_it() {
    for t in backends().await.unwrap() {
        let db = &t.db;
        db.migrate("old", &[V1, V2]).await.unwrap();
        sqlx::query("DELETE FROM wireleap_schema_floor")
            .execute(db.pool())
            .await
            .unwrap();
        let err = db.migrate("old", &[V1]).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 2,
                    floor: 2,
                    ..
                }
            ),
            "{}: {err}",
            t.name
        );
        db.migrate("old", &[V1, V2]).await.unwrap();
    }
}

#[tokio::test]
async fn rejects_unknown_urls() {
    let err = wireleap_store::Db::open("mysql://x").await.unwrap_err();
    assert!(err.to_string().contains("sqlite://PATH"), "{err}");
}
