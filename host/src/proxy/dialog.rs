//! Calls that are up: dialogs created by a 2xx to an INVITE we forwarded
//! (RFC 3261 12). The gateway is on the route of every in-dialog request
//! (Record-Route), and forwards each to the other party's address as it
//! learned it: the caller's source, the answering phone's destination. An
//! in-dialog request is accepted only from the party's own address, so a
//! third host cannot end or redirect someone else's call.

use std::collections::HashMap;

use crate::cdr::Cdr;
use crate::transport::Source;

/// Which side of a dialog sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Caller,
    Callee,
}

/// One established call leg pair.
#[derive(Debug)]
pub struct Dialog {
    /// Identifies this dialog among the table's (timers refer to it).
    pub id: u64,
    pub call_id: String,
    pub caller_tag: String,
    pub callee_tag: String,
    pub caller: Source,
    pub callee: Source,
    /// The caller's From and the callee's To (with its tag), as header values,
    /// for requests the gateway itself sends (BYE at the maximum duration).
    pub caller_from: String,
    pub callee_to: String,
    /// Remote targets (Contact URIs) of both parties.
    pub caller_contact: String,
    pub callee_contact: String,
    /// Highest CSeq seen from each side.
    pub caller_cseq: u32,
    pub callee_cseq: u32,
    /// The call's record, written when the dialog ends. None for the extra
    /// dialogs of a fork where a second phone also answered.
    pub cdr: Option<Cdr>,
    /// The maximum-duration timer, stopped when the dialog ends first (it
    /// would otherwise sleep for hours after every call).
    pub timer: Option<tokio::task::AbortHandle>,
}

impl Drop for Dialog {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

impl Dialog {
    /// The side a request with these tags comes from, if it belongs here.
    pub fn side_of(&self, from_tag: &str, to_tag: &str) -> Option<Side> {
        if from_tag == self.caller_tag && to_tag == self.callee_tag {
            Some(Side::Caller)
        } else if from_tag == self.callee_tag && to_tag == self.caller_tag {
            Some(Side::Callee)
        } else {
            None
        }
    }

    /// The party on `side`.
    pub fn party(&self, side: Side) -> &Source {
        match side {
            Side::Caller => &self.caller,
            Side::Callee => &self.callee,
        }
    }
}

/// Dialogs by Call-ID (a forked call may have several).
#[derive(Default)]
pub struct Dialogs {
    by_call_id: HashMap<String, Vec<Dialog>>,
}

impl Dialogs {
    pub fn insert(&mut self, dialog: Dialog) {
        self.by_call_id
            .entry(dialog.call_id.clone())
            .or_default()
            .push(dialog);
    }

    /// The dialog a request belongs to, and the side it came from.
    pub fn find_mut(
        &mut self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
    ) -> Option<(&mut Dialog, Side)> {
        self.by_call_id
            .get_mut(call_id)?
            .iter_mut()
            .find_map(|d| d.side_of(from_tag, to_tag).map(|side| (d, side)))
    }

    /// Whether a dialog with this Call-ID and callee tag exists already.
    pub fn contains(&self, call_id: &str, callee_tag: &str) -> bool {
        self.by_call_id
            .get(call_id)
            .is_some_and(|v| v.iter().any(|d| d.callee_tag == callee_tag))
    }

    /// The caller of any dialog of this Call-ID (2xx retransmissions that
    /// arrive after the call's transaction is gone go there).
    pub fn caller_of(&self, call_id: &str) -> Option<Source> {
        self.by_call_id.get(call_id)?.first().map(|d| d.caller)
    }

    /// Removes and returns a dialog by id.
    pub fn remove(&mut self, call_id: &str, id: u64) -> Option<Dialog> {
        let list = self.by_call_id.get_mut(call_id)?;
        let index = list.iter().position(|d| d.id == id)?;
        let dialog = list.swap_remove(index);
        if list.is_empty() {
            self.by_call_id.remove(call_id);
        }
        Some(dialog)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Dialog> {
        self.by_call_id.values().flatten()
    }

    pub fn len(&self) -> usize {
        self.by_call_id.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_call_id.is_empty()
    }
}
