//! End-to-end tests: the load generators (`load/`) against the real
//! servers (`peers/`), run in this process over loopback. They sit above
//! both floors, so that neither imports the other.

mod attack;
mod hub;
mod tls;
mod ws;
