//! [`Definition`]: a `Copy` handle to an interned [`CustomMods`], so that specs carrying a
//! user-defined mask stay plain `Copy` values. Definitions are interned by their canonical
//! text: equal texts give equal handles. Interned definitions live for the rest of the process
//! (a program uses a handful; each is a few hundred bytes).

use super::{CustomMods, ExprError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, RwLock};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Definition(u32);

#[derive(Default)]
struct Table {
    all: Vec<&'static CustomMods>,
    by_text: HashMap<String, u32>,
}

fn table() -> &'static RwLock<Table> {
    static TABLE: OnceLock<RwLock<Table>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

impl Definition {
    /// The handle of a definition (the same handle for every equal canonical text).
    pub fn intern(mods: &CustomMods) -> Definition {
        if let Some(&id) = table()
            .read()
            .expect("definition table lock")
            .by_text
            .get(mods.canonical())
        {
            return Definition(id);
        }
        let mut t = table().write().expect("definition table lock");
        if let Some(&id) = t.by_text.get(mods.canonical()) {
            return Definition(id);
        }
        let id = u32::try_from(t.all.len()).expect("fewer than 2^32 definitions");
        t.all.push(Box::leak(Box::new(mods.clone())));
        t.by_text.insert(mods.canonical().to_string(), id);
        Definition(id)
    }

    /// Parses and interns a definition text ([`CustomMods::parse`]).
    pub fn parse(text: &str) -> Result<Definition, ExprError> {
        CustomMods::parse(text).map(|m| Definition::intern(&m))
    }

    /// The definition.
    pub fn get(self) -> &'static CustomMods {
        table().read().expect("definition table lock").all[self.0 as usize]
    }
}

impl PartialOrd for Definition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By canonical text, so orders do not depend on interning order.
impl Ord for Definition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.get().canonical().cmp(other.get().canonical())
    }
}

impl fmt::Debug for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Definition({:?})", self.get().canonical())
    }
}

impl fmt::Display for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get().canonical())
    }
}

impl Serialize for Definition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.get().canonical())
    }
}

impl<'de> Deserialize<'de> for Definition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Definition::parse(&text).map_err(serde::de::Error::custom)
    }
}
