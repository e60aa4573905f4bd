//! `wireleap-ps-stripe`: the Stripe payment service. The binary only hands over to the shared lifecycle;
//! the service lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    wireleap_upgrade::startup::recover_at_start(wireleap_ps_stripe::NAME);
    wireleap_daemon::main::<wireleap_ps_stripe::PsStripe>()
}
