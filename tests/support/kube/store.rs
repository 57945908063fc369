//! The object store: every live object by kind and name (one namespace), one global
//! resourceVersion counter, and the watch history of each kind.
//!
//! Invariants:
//! - every write (create, update, remove) takes the next resourceVersion, sets it on the
//!   object, appends one change to its kind's history and publishes the new counter on
//!   [`Store::subscribe`]'s channel, all under the cluster's lock, so a watcher that reads the
//!   history and marks the channel seen under that lock misses nothing;
//! - a kind's history holds every change with a resourceVersion above its `floor`; a watch
//!   from below the floor is too old (the 410 ERROR event). The history keeps at most
//!   `history` changes per kind, and [`Store::forget`] raises every floor to now;
//! - a removed object's last change carries it with the removal's resourceVersion.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

/// The kinds the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `batch/v1` Job.
    Job,
    /// `v1` Pod.
    Pod,
    /// `v1` Secret.
    Secret,
    /// `v1` ConfigMap.
    ConfigMap,
    /// `v1` Event.
    Event,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] = [
        Kind::Job,
        Kind::Pod,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Event,
    ];

    /// The resource name in paths (`jobs`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::Event => "events",
        }
    }

    /// The `kind` field.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Event => "Event",
        }
    }

    /// The API group (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Job => "batch",
            _ => "",
        }
    }

    /// The `apiVersion` field.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Job => "batch/v1",
            _ => "v1",
        }
    }

    /// The resource as error messages name it (`jobs.batch`, `pods`).
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// The kind of `plural` in `group`.
    pub fn from_plural(group: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == plural)
    }
}

/// What a change did, as a watch event's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

impl ChangeType {
    /// The watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One write, as the watch history keeps it.
#[derive(Clone, Debug)]
pub struct Change {
    /// Its resourceVersion.
    pub rv: u64,
    /// What it did.
    pub what: ChangeType,
    /// The object after it (for a removal: the last state).
    pub object: Arc<Value>,
    /// The object before it, for updates (selectors decide on both).
    pub previous: Option<Arc<Value>>,
}

/// The history of one kind.
#[derive(Default)]
struct History {
    changes: VecDeque<Change>,
    floor: u64,
}

/// The store.
pub struct Store {
    objects: BTreeMap<Kind, BTreeMap<String, Value>>,
    histories: BTreeMap<Kind, History>,
    rv: u64,
    keep: usize,
    changed: watch::Sender<u64>,
}

/// A watch position older than its kind's history.
#[derive(Debug)]
pub struct Expired;

impl Store {
    /// An empty store keeping `keep` changes per kind.
    pub fn new(keep: usize) -> Self {
        Self {
            objects: BTreeMap::new(),
            histories: BTreeMap::new(),
            rv: 1,
            keep: keep.max(1),
            changed: watch::Sender::new(1),
        }
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// A receiver told of every write (its value: the resourceVersion after it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes the subscribers without a write (the cluster is closing).
    pub fn wake(&self) {
        self.changed.send_modify(|_| {});
    }

    /// The live object `name` of `kind`.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Value> {
        self.objects.get(&kind)?.get(name)
    }

    /// The live objects of `kind`, by name.
    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &Value> {
        self.objects.get(&kind).into_iter().flat_map(|m| m.values())
    }

    /// The object of `kind` whose uid is `uid`.
    pub fn by_uid(&self, kind: Kind, uid: &str) -> Option<&Value> {
        self.list(kind).find(|o| o["metadata"]["uid"] == uid)
    }

    fn record(&mut self, kind: Kind, what: ChangeType, object: &Value, previous: Option<Value>) {
        let history = self.histories.entry(kind).or_default();
        history.changes.push_back(Change {
            rv: self.rv,
            what,
            object: Arc::new(object.clone()),
            previous: previous.map(Arc::new),
        });
        while history.changes.len() > self.keep {
            if let Some(dropped) = history.changes.pop_front() {
                history.floor = dropped.rv;
            }
        }
        self.changed.send_replace(self.rv);
    }

    fn next_rv(&mut self, object: &mut Value) {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
    }

    /// Stores a new object (its name is free: the caller checked); returns it as stored.
    pub fn create(&mut self, kind: Kind, mut object: Value) -> Value {
        self.next_rv(&mut object);
        let name = object["metadata"]["name"]
            .as_str()
            .expect("invariant: a created object has a name")
            .to_owned();
        self.record(kind, ChangeType::Added, &object, None);
        self.objects
            .entry(kind)
            .or_default()
            .insert(name, object.clone());
        object
    }

    /// Replaces a live object; returns it as stored. Unchanged objects are not written.
    pub fn update(&mut self, kind: Kind, mut object: Value) -> Value {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("invariant: an updated object has a name")
            .to_owned();
        let previous = self
            .get(kind, &name)
            .cloned()
            .expect("invariant: only live objects are updated");
        object["metadata"]["resourceVersion"] = previous["metadata"]["resourceVersion"].clone();
        if object == previous {
            return object;
        }
        self.next_rv(&mut object);
        self.record(kind, ChangeType::Modified, &object, Some(previous));
        self.objects
            .entry(kind)
            .or_default()
            .insert(name, object.clone());
        object
    }

    /// Removes a live object; returns its last state (with the removal's resourceVersion).
    pub fn remove(&mut self, kind: Kind, name: &str) -> Option<Value> {
        self.remove_with(kind, name, |_| {})
    }

    /// Removes a live object after `last` edited its last state (a pod's deletionTimestamp).
    pub fn remove_with(
        &mut self,
        kind: Kind,
        name: &str,
        last: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut object = self.objects.get_mut(&kind)?.remove(name)?;
        last(&mut object);
        self.next_rv(&mut object);
        self.record(kind, ChangeType::Deleted, &object, None);
        Some(object)
    }

    /// The changes of `kind` after `rv`, or [`Expired`] when the history no longer reaches back
    /// to it.
    pub fn changes_since(&self, kind: Kind, rv: u64) -> Result<Vec<Change>, Expired> {
        let Some(history) = self.histories.get(&kind) else {
            return Ok(Vec::new());
        };
        if rv < history.floor {
            return Err(Expired);
        }
        Ok(history
            .changes
            .iter()
            .filter(|c| c.rv > rv)
            .cloned()
            .collect())
    }

    /// Whether a watch of `kind` may start at `rv`.
    pub fn reaches(&self, kind: Kind, rv: u64) -> Result<(), Expired> {
        match self.histories.get(&kind) {
            Some(h) if rv < h.floor => Err(Expired),
            _ => Ok(()),
        }
    }

    /// As after an API server's restart whose watch cache starts afresh: the resourceVersion
    /// moves on and every kind's history starts there, so a watch from any version a client
    /// holds is too old, while one from a list made now is not.
    pub fn restart(&mut self) {
        self.rv += 1;
        self.forget();
        self.wake();
    }

    /// Drops every kind's history: watches from before now are too old.
    pub fn forget(&mut self) {
        for kind in Kind::ALL {
            let history = self.histories.entry(kind).or_default();
            history.changes.clear();
            history.floor = self.rv;
        }
    }
}
