//! A member's tags (`tags:` in its configuration), by key. A member carries only the tags its
//! policy asks for in `describe()` (`PolicyInfo::tags`); its `zone` is always there as
//! `Member::zone`.
//!
//! ```
//! use regent_policy_sdk::tags;
//! use regent_policy_sdk::testing::{member, tagged};
//! let m = tagged(member("pg-1"), &[("rack", "r7")]);
//! assert_eq!(tags::get(&m, "rack"), Some("r7"));
//! assert_eq!(tags::get(&m, "nosuch"), None);
//! ```

use crate::types::Member;

/// The value of the tag `key`, if the member has it.
pub fn get<'a>(m: &'a Member, key: &str) -> Option<&'a str> {
    m.tags
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
}
