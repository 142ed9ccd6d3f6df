//! Reflector caches indexed by namespace: the objects of one namespace are found without walking
//! every cached object, so a change in one namespace costs work proportional to that namespace.

use std::collections::{BTreeSet, HashMap};
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use smol_str::SmolStr;

/// Object names by namespace (a name of up to 23 bytes is held inline: no allocation per
/// object).
type Names = HashMap<String, BTreeSet<SmolStr>>;

/// The reading side: a reflector [`Store`] (all of its methods, through `Deref`) and the names
/// of each namespace's objects.
pub struct IndexedStore<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    index: Arc<RwLock<Names>>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for IndexedStore<K> {
    fn clone(&self) -> Self {
        IndexedStore {
            store: self.store.clone(),
            index: self.index.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> IndexedStore<K> {
    /// The cached objects of `namespace`, in name order.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let names: Vec<SmolStr> = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            match index.get(namespace) {
                Some(names) => names.iter().cloned().collect(),
                None => return vec![],
            }
        };
        names
            .into_iter()
            .filter_map(|name| self.store.get(&ObjectRef::new(&name).within(namespace)))
            .collect()
    }

    /// The plain reflector store (for what takes one, such as a controller).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Deref for IndexedStore<K> {
    type Target = Store<K>;
    fn deref(&self) -> &Store<K> {
        &self.store
    }
}

/// The writing side: applies each watcher event to the store and the index alike (a relist
/// replaces both when it completes, as the store does).
pub struct IndexedWriter<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: Writer<K>,
    index: Arc<RwLock<Names>>,
    /// The names of a relist under way.
    relist: Names,
}

/// A new, empty indexed cache.
pub fn indexed_store<K>() -> (IndexedStore<K>, IndexedWriter<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let writer = Writer::default();
    let index = Arc::new(RwLock::new(Names::new()));
    let reader = IndexedStore {
        store: writer.as_reader(),
        index: index.clone(),
    };
    let writer = IndexedWriter {
        writer,
        index,
        relist: Names::new(),
    };
    (reader, writer)
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> IndexedWriter<K> {
    /// A reader of this cache.
    pub fn as_reader(&self) -> IndexedStore<K> {
        IndexedStore {
            store: self.writer.as_reader(),
            index: self.index.clone(),
        }
    }

    /// Applies `event` to the store, then to the index.
    pub fn apply(&mut self, event: &watcher::Event<K>) {
        self.writer.apply_watcher_event(event);
        let key = |obj: &K| {
            (
                obj.meta().namespace.clone().unwrap_or_default(),
                SmolStr::new(obj.meta().name.as_deref().unwrap_or_default()),
            )
        };
        match event {
            watcher::Event::Apply(obj) => {
                let (namespace, name) = key(obj);
                let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                index.entry(namespace).or_default().insert(name);
            }
            watcher::Event::Delete(obj) => {
                let (namespace, name) = key(obj);
                let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                if let Some(names) = index.get_mut(&namespace) {
                    names.remove(&name);
                    if names.is_empty() {
                        index.remove(&namespace);
                    }
                }
            }
            watcher::Event::Init => self.relist = Names::new(),
            watcher::Event::InitApply(obj) => {
                let (namespace, name) = key(obj);
                self.relist.entry(namespace).or_default().insert(name);
            }
            watcher::Event::InitDone => {
                let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                *index = std::mem::take(&mut self.relist);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(namespace: &str, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(store: &IndexedStore<ConfigMap>, namespace: &str) -> Vec<String> {
        store
            .in_namespace(namespace)
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn each_namespace_sees_its_own_objects_as_they_come_and_go() {
        let (store, mut writer) = indexed_store::<ConfigMap>();
        for (ns, name) in [("a", "x"), ("b", "y"), ("a", "w")] {
            writer.apply(&watcher::Event::Apply(cm(ns, name)));
        }
        assert_eq!(names(&store, "a"), ["w", "x"]);
        assert_eq!(names(&store, "b"), ["y"]);
        assert!(names(&store, "c").is_empty());
        writer.apply(&watcher::Event::Delete(cm("a", "x")));
        writer.apply(&watcher::Event::Delete(cm("b", "y")));
        assert_eq!(names(&store, "a"), ["w"]);
        assert!(names(&store, "b").is_empty());
        assert_eq!(store.state().len(), 1, "the store itself, through Deref");
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_completes_as_the_store_does() {
        let (store, mut writer) = indexed_store::<ConfigMap>();
        writer.apply(&watcher::Event::Apply(cm("a", "gone")));
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(cm("a", "kept")));
        // Until the relist completes, the store and the index show what they showed.
        assert_eq!(names(&store, "a"), ["gone"]);
        writer.apply(&watcher::Event::InitApply(cm("b", "new")));
        writer.apply(&watcher::Event::InitDone);
        assert_eq!(names(&store, "a"), ["kept"]);
        assert_eq!(names(&store, "b"), ["new"]);
        assert_eq!(store.state().len(), 2);
    }
}
