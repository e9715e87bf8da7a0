//! The fixture really starts PostgreSQL with pgvector, and stops it.

#[test]
fn a_server_starts_with_pgvector_and_stops_when_dropped() {
    let pg = facesearch_pgfixture::TestPostgres::start().expect("PostgreSQL starts");
    let url = pg.create_database("fixture_check").expect("a database");
    assert!(url.ends_with("/fixture_check"));
    let version = pg
        .psql("fixture_check", "CREATE EXTENSION vector; SELECT extversion FROM pg_extension WHERE extname = 'vector'");
    assert!(version.expect("psql runs").trim().starts_with("0.8"), "pgvector 0.8");
    let port = pg.port();
    drop(pg);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the server is gone");
}
