//! `wireleap-devnet`: one command runs a whole Wireleap network on loopback.
use std::process::ExitCode;

fn main() -> ExitCode {
    wireleap_devnet::cli::main()
}
