//! `wireleap`: the Wireleap client. The binary only hands over to the shared lifecycle;
//! the service lives in the library. `status` is answered here so it can add what the
//! running client reports to the shared "running / not running" line.

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Some(code) = wireleap::cli::status_if_asked(std::env::args_os()) {
        return code;
    }
    wireleap_upgrade::startup::recover_at_start(wireleap::NAME);
    wireleap_daemon::main::<wireleap::Client>()
}
