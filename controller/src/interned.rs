//! Values that many cached objects hold equal copies of, kept once. Every
//! node's NodeImage lists the same image entries for the same jobs, so the
//! cache keeps each distinct (image name, entry) once and the NodeImages
//! point at it: at 5 000 nodes this is most of the controller's memory.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use prewarm_api::node_image::ImageStatus;
use prewarm_api::v1beta1::ImageSpec;
use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// A map entry shared between cached objects.
#[derive(Debug, PartialEq)]
pub struct Named<V> {
    pub name: String,
    pub value: V,
}

/// The table of live shared entries of one type.
#[derive(Debug)]
pub struct Interner<V> {
    table: Mutex<Table<V>>,
    hasher: RandomState,
}

#[derive(Debug)]
struct Table<V> {
    by_hash: HashMap<u64, Vec<Weak<Named<V>>>>,
    entries: usize,
    /// Entries after the last sweep of dropped ones: the next sweep comes
    /// when the table has doubled, so sweeping costs O(1) per insert.
    live_after_sweep: usize,
}

/// Feeds serialised bytes to a hasher, so that equal values hash equally
/// without a `Hash` implementation on the Kubernetes types they contain.
struct HashWriter<'a, H>(&'a mut H);

impl<H: Hasher> io::Write for HashWriter<'_, H> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const MIN_SWEEP: usize = 1024;

impl<V: Serialize + PartialEq> Interner<V> {
    fn new() -> Self {
        Self {
            table: Mutex::new(Table {
                by_hash: HashMap::new(),
                entries: 0,
                live_after_sweep: 0,
            }),
            hasher: RandomState::new(),
        }
    }

    /// The shared entry equal to (`name`, `value`), made if there is none.
    pub fn intern(&self, name: String, value: V) -> Arc<Named<V>> {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(name.as_bytes());
        if serde_json::to_writer(HashWriter(&mut hasher), &value).is_err() {
            return Arc::new(Named { name, value });
        }
        let hash = hasher.finish();
        let mut table = match self.table.lock() {
            Ok(table) => table,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket = table.by_hash.entry(hash).or_default();
        let found = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|e| e.name == name && e.value == value);
        if let Some(shared) = found {
            return shared;
        }
        let shared = Arc::new(Named { name, value });
        let before = bucket.len();
        bucket.retain(|e| e.strong_count() > 0);
        let dropped = before - bucket.len();
        bucket.push(Arc::downgrade(&shared));
        table.entries = table.entries + 1 - dropped;
        if table.entries > 2 * table.live_after_sweep.max(MIN_SWEEP) {
            table.sweep();
        }
        shared
    }
}

impl<V> Table<V> {
    fn sweep(&mut self) {
        self.by_hash.retain(|_, bucket| {
            bucket.retain(|e| e.strong_count() > 0);
            !bucket.is_empty()
        });
        self.entries = self.by_hash.values().map(Vec::len).sum();
        self.live_after_sweep = self.entries;
    }
}

/// A type whose map entries are shared through one process-wide interner.
pub trait Internable: Serialize + PartialEq + Sized + 'static {
    fn interner() -> &'static Interner<Self>;
}

static IMAGE_SPECS: LazyLock<Interner<ImageSpec>> = LazyLock::new(Interner::new);
static IMAGE_STATUSES: LazyLock<Interner<ImageStatus>> = LazyLock::new(Interner::new);

impl Internable for ImageSpec {
    fn interner() -> &'static Interner<Self> {
        &IMAGE_SPECS
    }
}

impl Internable for ImageStatus {
    fn interner() -> &'static Interner<Self> {
        &IMAGE_STATUSES
    }
}

/// A string-keyed map whose entries are shared: read like a `BTreeMap`,
/// (de)serialised as a JSON object, sorted by name.
#[derive(Debug, PartialEq)]
pub struct SharedMap<V>(Box<[Arc<Named<V>>]>);

impl<V> Clone for SharedMap<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<V> Default for SharedMap<V> {
    fn default() -> Self {
        Self(Box::default())
    }
}

impl<'a, V> IntoIterator for &'a SharedMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, Arc<Named<V>>>, fn(&'a Arc<Named<V>>) -> (&'a String, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|e| (&e.name, &e.value))
    }
}

impl<V> SharedMap<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        self.shared(name).map(|e| &e.value)
    }

    /// The shared entry itself, so that two versions of an object can be
    /// compared by pointer first.
    pub fn shared(&self, name: &str) -> Option<&Arc<Named<V>>> {
        let at = self.0.binary_search_by(|e| e.name.as_str().cmp(name)).ok()?;
        self.0.get(at)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.into_iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|e| &e.name)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|e| &e.value)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An owned copy, for building the map to write.
    pub fn to_map(&self) -> BTreeMap<String, V>
    where
        V: Clone,
    {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl<V: Internable> FromIterator<(String, V)> for SharedMap<V> {
    /// A repeated name keeps its last value, as in a JSON object.
    fn from_iter<I: IntoIterator<Item = (String, V)>>(entries: I) -> Self {
        let unique: BTreeMap<String, V> = entries.into_iter().collect();
        let interner = V::interner();
        Self(
            unique
                .into_iter()
                .map(|(name, value)| interner.intern(name, value))
                .collect(),
        )
    }
}

impl<V: Serialize> Serialize for SharedMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for entry in &self.0 {
            map.serialize_entry(&entry.name, &entry.value)?;
        }
        map.end()
    }
}

impl<'de, V: Internable + Deserialize<'de>> Deserialize<'de> for SharedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = BTreeMap::<String, V>::deserialize(deserializer)?;
        Ok(entries.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image(tag: &str) -> serde_json::Value {
        json!({"tags": [{"tag": tag, "version": 1, "ownerReferences": [{"uid": "u1", "name": "job"}]}]})
    }

    #[test]
    fn equal_entries_of_different_maps_are_one_allocation() -> Result<(), serde_json::Error> {
        let a: SharedMap<ImageSpec> = serde_json::from_value(json!({"nginx": image("1"), "redis": image("7")}))?;
        let b: SharedMap<ImageSpec> = serde_json::from_value(json!({"redis": image("7"), "nginx": image("2")}))?;
        let (Some(a_redis), Some(b_redis)) = (a.shared("redis"), b.shared("redis")) else {
            panic!("redis missing: {a:?} {b:?}");
        };
        assert!(Arc::ptr_eq(a_redis, b_redis));
        let (Some(a_nginx), Some(b_nginx)) = (a.shared("nginx"), b.shared("nginx")) else {
            panic!("nginx missing");
        };
        assert!(!Arc::ptr_eq(a_nginx, b_nginx));
        assert_eq!(a.get("nginx").map(|i| i.tags[0].tag.as_str()), Some("1"));
        assert_eq!(b.keys().collect::<Vec<_>>(), ["nginx", "redis"]);
        // The same value under another image name is another entry.
        let c: SharedMap<ImageSpec> = serde_json::from_value(json!({"other": image("7")}))?;
        assert!(!c.shared("other").is_some_and(|e| Arc::ptr_eq(e, b_redis)));
        Ok(())
    }

    #[test]
    fn round_trips_as_a_json_object_and_later_duplicates_win() -> Result<(), serde_json::Error> {
        let text = r#"{"b": {"tags": []}, "a": {"tags": [{"tag": "x"}]}, "b": {"tags": [{"tag": "y"}]}}"#;
        let map: SharedMap<ImageSpec> = serde_json::from_str(text)?;
        assert_eq!(
            serde_json::to_value(&map)?,
            json!({"a": {"tags": [{"tag": "x"}]}, "b": {"tags": [{"tag": "y"}]}})
        );
        assert_eq!(map.len(), 2);
        assert_eq!(map.to_map().len(), 2);
        Ok(())
    }

    impl<V> Interner<V> {
        /// Distinct live entries.
        fn live(&self) -> usize {
            let mut table = match self.table.lock() {
                Ok(table) => table,
                Err(poisoned) => poisoned.into_inner(),
            };
            table.sweep();
            table.entries
        }
    }

    #[test]
    fn dropped_entries_are_swept() {
        let interner: Interner<ImageStatus> = Interner::new();
        let kept = interner.intern("kept".into(), ImageStatus::default());
        for i in 0..3 * MIN_SWEEP {
            drop(interner.intern(format!("image-{i}"), ImageStatus::default()));
        }
        assert_eq!(interner.live(), 1);
        assert!(Arc::ptr_eq(
            &kept,
            &interner.intern("kept".into(), ImageStatus::default())
        ));
    }
}
