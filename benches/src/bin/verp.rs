//! Prints the VERP return path Herald gives a message: `verp SECRET ACCOUNT MESSAGE_ID DOMAIN`
//! (for benches and manual tests of the bounce MX).

use herald_engine::feedback::verp::VerpKeys;
use herald_schemas::{AccountId, MessageId};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [secret, account, id, domain] = args.as_slice() else {
        eprintln!("usage: verp SECRET ACCOUNT MESSAGE_ID DOMAIN");
        std::process::exit(2);
    };
    let keys = VerpKeys::new(secret.as_bytes(), &[]);
    match keys.address(&AccountId(account.clone()), &MessageId(id.clone()), domain) {
        Some(a) => println!("{a}"),
        None => {
            eprintln!("{id} is not a Herald message id");
            std::process::exit(1);
        }
    }
}
