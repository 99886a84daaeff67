//! Unit tests with real crypto: keys are generated here, JWKS are served by
//! an in-process hyper server on 127.0.0.1.

mod fixtures;
mod jwks_url;
mod verify;

use super::*;
