//! Whether what a nameserver sent back answers the query it was sent: the check between
//! the upstream's bytes and the cache. A message that is not a response, has another
//! opcode, or holds another question (another name, type or class) is not an answer: kept,
//! it would sit in the cache under the asked name for its TTL and be handed to clients,
//! and in redir-host mode its addresses would be remembered as the asked name's. A broken
//! or hostile server, or a spoofed datagram that guessed the id, must not get that far.

use hickory_proto::op::{Message, MessageType};

/// Why `reply` is not an answer to `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAnAnswer {
    /// The QR bit is clear: a query (perhaps our own, reflected), not a response.
    #[error("not a response")]
    NotResponse,
    /// Another opcode than the query's.
    #[error("another opcode")]
    OpCode,
    /// Another question than the query's (or none, or several).
    #[error("it answers another question")]
    Question,
    /// Truncated where nothing larger can follow (over TCP, TLS, HTTPS).
    #[error("truncated over a stream")]
    Truncated,
}

/// Checks that `reply` answers `query` (the id is the transport's business: DoH replies
/// carry 0). `stream`: it came over TCP, TLS or HTTPS, where a truncated reply is final.
pub fn check(query: &Message, reply: &Message, stream: bool) -> Result<(), NotAnAnswer> {
    if reply.message_type() != MessageType::Response {
        return Err(NotAnAnswer::NotResponse);
    }
    if reply.op_code() != query.op_code() {
        return Err(NotAnAnswer::OpCode);
    }
    // `Name`'s `==` ignores ASCII case, as DNS does (RFC 4343).
    let same = match (query.queries(), reply.queries()) {
        ([q], [r]) => {
            q.name() == r.name()
                && q.query_type() == r.query_type()
                && q.query_class() == r.query_class()
        }
        _ => false,
    };
    if !same {
        return Err(NotAnAnswer::Question);
    }
    if stream && reply.truncated() {
        return Err(NotAnAnswer::Truncated);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::{DNSClass, Name, RecordType};

    use super::*;

    fn query(name: &str, kind: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(7)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .add_query(Query::query(Name::from_str(name).unwrap(), kind));
        m
    }

    fn reply_to(q: &Message) -> Message {
        let mut r = q.clone();
        r.set_message_type(MessageType::Response);
        r
    }

    #[test]
    fn a_reply_to_the_same_question_is_an_answer_whatever_the_case() {
        let q = query("www.example.com.", RecordType::A);
        assert_eq!(check(&q, &reply_to(&q), false), Ok(()));
        let shouted = reply_to(&query("WWW.Example.COM.", RecordType::A));
        assert_eq!(check(&q, &shouted, true), Ok(()));
    }

    #[test]
    fn anything_else_is_not() {
        let q = query("www.example.com.", RecordType::A);
        assert_eq!(check(&q, &q, false), Err(NotAnAnswer::NotResponse));
        let other = reply_to(&query("victim.example.", RecordType::A));
        assert_eq!(check(&q, &other, false), Err(NotAnAnswer::Question));
        let aaaa = reply_to(&query("www.example.com.", RecordType::AAAA));
        assert_eq!(check(&q, &aaaa, false), Err(NotAnAnswer::Question));
        let mut chaos = reply_to(&q);
        chaos.queries_mut()[0].set_query_class(DNSClass::CH);
        assert_eq!(check(&q, &chaos, false), Err(NotAnAnswer::Question));
        let mut none = reply_to(&q);
        none.take_queries();
        assert_eq!(check(&q, &none, false), Err(NotAnAnswer::Question));
        let mut two = reply_to(&q);
        two.add_query(Query::query(
            Name::from_str("b.example.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(check(&q, &two, false), Err(NotAnAnswer::Question));
        let mut notify = reply_to(&q);
        notify.set_op_code(OpCode::Notify);
        assert_eq!(check(&q, &notify, false), Err(NotAnAnswer::OpCode));
    }

    #[test]
    fn truncated_is_final_only_over_a_stream() {
        let q = query("www.example.com.", RecordType::A);
        let mut tc = reply_to(&q);
        tc.set_truncated(true);
        assert_eq!(check(&q, &tc, false), Ok(()));
        assert_eq!(check(&q, &tc, true), Err(NotAnAnswer::Truncated));
    }
}
