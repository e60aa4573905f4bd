//! `wireleap`: the Wireleap client. The binary only hands over to the shared lifecycle;
//! the service lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    wireleap_daemon::main::<wireleap::Client>()
}
