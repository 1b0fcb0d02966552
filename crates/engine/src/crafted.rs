//! Test support for the restore attack tests: a recovery point made of trees the caller
//! wrote, names and all, stored exactly as a backup stores one. A backup never writes a name
//! like `..` or `a/b`; a tampered or malicious vault can, and restore must refuse them. These
//! functions let a test build such a vault through the engine's own format code instead of a
//! copy of it. Not for production use.

use rbackup_crypto::BlobId;
use rbackup_store::PutMode;

use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::index::{self, IndexFile, IndexPack};
use crate::layout::pack_rel;
use crate::pack::{BlobKind, Framer, PackWriter};
use crate::repo::Repository;
use crate::snapshot::{self, RecoveryPoint};
use crate::tree::Tree;

impl Repository {
    /// The blob id `tree` is stored under, so a test can refer to it from a parent tree.
    #[doc(hidden)]
    pub fn crafted_tree_id(&self, tree: &Tree) -> BlobId {
        self.keys.blob_id(&tree.encode())
    }

    /// Stores `data` blobs (referred to by `self.master_keys().blob_id(content)`) and `trees`
    /// in one new pack with its index file, then a recovery point whose root is `root`.
    /// Returns the recovery point's id. For attack tests only.
    #[doc(hidden)]
    pub async fn store_crafted_recovery_point(
        &self,
        data: &[&[u8]],
        trees: &[Tree],
        root: BlobId,
    ) -> Result<Id> {
        let scratch = tempfile::tempdir().map_err(|e| EngineError::io(std::env::temp_dir(), e))?;
        let mut pack = PackWriter::create(&self.keys, scratch.path())?;
        let mut framer = Framer::new(3)?;
        let blobs = data
            .iter()
            .map(|d| (BlobKind::Data, d.to_vec()))
            .chain(trees.iter().map(|t| (BlobKind::Tree, t.encode())));
        for (kind, bytes) in blobs {
            let frame = framer.frame(&bytes, false);
            pack.add(kind, self.keys.blob_id(&bytes), &frame, bytes.len() as u32)?;
        }
        let pack = pack.finish()?;
        self.store
            .put_file(&self.path(&pack_rel(&pack.id)), &pack.path, PutMode::Create)
            .await?;
        let file = IndexFile {
            packs: vec![IndexPack {
                id: pack.id,
                size: pack.size,
                blobs: pack.entries,
            }],
        };
        let name = Id::random();
        let sealed = index::seal(&self.keys, &name, &file);
        self.put_immutable(&format!("{}/{}", index::KIND, name.to_hex()), sealed)
            .await?;
        let rp_id = Id::random();
        let rp = RecoveryPoint {
            time: jiff::Timestamp::now().to_string(),
            hostname: self.config.hostname.clone(),
            paths: vec!["/".into()],
            tree: root,
            parent: None,
            job: None,
            files: 0,
            dirs: 0,
            bytes: 0,
            bytes_added: 0,
            sequence: 0,
            predecessors: Vec::new(),
        };
        let sealed = snapshot::seal(&self.keys, &rp_id, &rp);
        self.put_immutable(&format!("{}/{}", snapshot::KIND, rp_id.to_hex()), sealed)
            .await?;
        Ok(rp_id)
    }
}
