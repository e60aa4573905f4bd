//! Schema migrations behave the same on every backend.
#![allow(clippy::unwrap_used)]

use wireleap_store::testing::backends;
use wireleap_store::{Migration, StoreError};

const V1: Migration = Migration {
    version: 1,
    name: "items",
    sqlite: "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL);\n",
    postgres: "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL);\n",
};
const V2: Migration = Migration {
    version: 2,
    name: "items_note",
    sqlite: "ALTER TABLE items ADD COLUMN note TEXT;\n",
    postgres: "ALTER TABLE items ADD COLUMN note TEXT;\n",
};
const BROKEN: Migration = Migration {
    version: 3,
    name: "broken",
    sqlite: "CREATE TABLE t3 (a INT);\nTHIS IS NOT SQL;\n",
    postgres: "CREATE TABLE t3 (a INT);\nTHIS IS NOT SQL;\n",
};

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
        assert!(
            sqlx::query("SELECT * FROM t3")
                .fetch_all(db.pool())
                .await
                .is_err(),
            "{}: half-applied migration left its table",
            t.name
        );

        // An older binary refuses a newer schema instead of writing into it.
        let err = db.migrate("demo", &[V1]).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn rejects_unknown_urls() {
    let err = wireleap_store::Db::open("mysql://x").await.unwrap_err();
    assert!(err.to_string().contains("sqlite://PATH"), "{err}");
}
