//! What the controller asks of the DNS server: a query through its nameservers and cache
//! (`/dns/query`), and emptying the cache or the fake-ip table (`/cache/*/flush`).

use hickory_proto::op::Message;
use tpgate_core::dns::{Cache, FakePool};
use tracing::info;

use super::{lock, Dns};

impl Dns {
    /// `query` answered by the nameservers (through the cache, as the server would for a
    /// name it does not fake); `None` when none answered.
    pub(crate) async fn query(&self, query: &Message, name: &str) -> Option<Message> {
        self.forward(query, name).await
    }

    /// Forgets every cached answer.
    pub(crate) fn flush_cache(&self) {
        *lock(&self.cache) = Cache::default();
        info!("dns: cache flushed by the controller");
    }

    /// Forgets every fake address handed out (and saves the empty table); false when not
    /// in fake-ip mode.
    pub(crate) fn flush_fakeip(&self) -> bool {
        let mut any = false;
        for pool in [&self.fake4, &self.fake6].into_iter().flatten() {
            let mut p = lock(pool);
            if let Some(empty) = FakePool::new(p.range()) {
                *p = empty;
                any = true;
            }
        }
        if any {
            self.save();
            info!("dns: fake-ip table flushed by the controller");
        }
        any
    }
}
