//! How many cases the property tests that stand in for fuzzing run: 2,000
//! each by default (the suite's bounded run), or `PROPTEST_CASES` for a
//! long run by hand (`PROPTEST_CASES=2000000 cargo test --release --lib fuzz_`).

use proptest::test_runner::Config;

pub fn config() -> Config {
    let mut config = Config::default();
    if std::env::var("PROPTEST_CASES").is_err() {
        config.cases = 2_000;
    }
    config.failure_persistence = None;
    config
}
