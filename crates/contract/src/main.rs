//! `wireleap-contract`: the Wireleap service contract. The binary only hands over to the shared lifecycle;
//! the service lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    wireleap_upgrade::startup::recover_at_start(wireleap_contract::NAME);
    wireleap_daemon::main::<wireleap_contract::Contract>()
}
