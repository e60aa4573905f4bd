//! `wireleap-ps-stripe`: the Stripe payment service. The binary only hands over to the shared lifecycle;
//! the service lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    wireleap_daemon::main::<wireleap_ps_stripe::PsStripe>()
}
