//! Per-relation caches of resolved column numbers and compiled settings.
//!
//! Each capability caches one value per relation (keyed by the value's type),
//! built on first use and dropped when Postgres invalidates the relation's
//! relcache entry: on ALTER TABLE, trigger changes, and whenever the extension
//! changes a table's declarations (see `catalog::invalidate`).
use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use crate::fast_hash::FastMap;

type Entries = FastMap<(Oid, TypeId), Rc<dyn Any>>;

thread_local! {
    static ENTRIES: RefCell<Entries> = RefCell::new(FastMap::default());
    // Bumped on every invalidation, so a value built while one arrived is
    // not kept.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    // Set when an invalidation found the map busy: clear all on next use.
    static STALE: Cell<bool> = const { Cell::new(false) };
}

/// Returns the cached `T` for `relid`, building it with `build` if absent
/// (its queries run with `search_path` pinned).
pub fn get_or_build<T: 'static>(relid: Oid, build: impl FnOnce() -> T) -> Rc<T> {
    let key = (relid, TypeId::of::<T>());
    if STALE.with(|stale| stale.replace(false)) {
        ENTRIES.with(|entries| entries.borrow_mut().clear());
    }
    let cached = ENTRIES.with(|entries| entries.borrow().get(&key).cloned());
    if let Some(value) = cached.and_then(|value| value.downcast::<T>().ok()) {
        return value;
    }
    let generation = GENERATION.with(Cell::get);
    let value = Rc::new(crate::privilege::pinned(build));
    if GENERATION.with(Cell::get) == generation {
        ENTRIES.with(|entries| entries.borrow_mut().insert(key, value.clone() as Rc<dyn Any>));
    }
    value
}

/// Drops every value cached for `relid` in this backend now.
pub fn forget(relid: Oid) {
    GENERATION.with(|g| g.set(g.get() + 1));
    ENTRIES.with(|entries| match entries.try_borrow_mut() {
        Ok(mut entries) => entries.retain(|(oid, _), _| *oid != relid),
        Err(_) => STALE.with(|stale| stale.set(true)),
    });
}

/// Called by Postgres for each relcache invalidation. Must not raise or
/// touch the catalogs.
#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: Oid) {
    if relid == pg_sys::InvalidOid {
        GENERATION.with(|g| g.set(g.get() + 1));
        STALE.with(|stale| stale.set(true));
    } else {
        forget(relid);
    }
}

/// Registers the invalidation callback; once per backend, from `_PG_init`.
pub fn register_invalidation_callback() {
    // SAFETY: the callback is a static function that neither raises nor
    // touches the catalogs; Postgres keeps the pointer for the backend's life.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0)) };
}
