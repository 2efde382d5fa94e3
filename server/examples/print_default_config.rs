//! Prints the default configuration file, as shown in README.md.
fn main() {
    print!("{}", tern_server::Config::default().example_toml());
}
