//! The proxy's timers and forking rules on tokio's paused clock: real UDP
//! sockets on loopback for the phones and the caller, virtual time for every
//! timer, so "the INVITE is retransmitted after T1, 2*T1, 4*T1" is checked
//! to the millisecond without sleeping.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::Proxy;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::directory::Directory;
use crate::guard::Guard;
use crate::plugins::Chain;
use crate::registrar::location::Location;
use crate::registrar::Registrar;
use crate::server::Core;
use crate::sip::{Message, Method};
use crate::stats::Stats;
use crate::store::{Grouping, Store, StoredBinding};
use crate::transaction::{Key, Timers, Transactions};
use crate::transport::{Outbound, Route, Source, Transport};

const T1: Duration = Duration::from_millis(100);

/// Group 600 hunting 101 then 102, a second each.
const HUNT_600: &str = "[[ring_group]]\nnumber = \"600\"\nstrategy = \"hunt\"\n\
                        members = [\"101\", \"102\"]\nmember_timeout_ms = 1000\n";

/// A core with one UDP socket, no plugins, and the given extra config.
struct Rig {
    core: Arc<Core>,
    caller: UdpSocket,
    _db: TempDb,
}

struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
        let _ = std::fs::remove_dir_all(format!("{}.voicemail", self.0.display()));
    }
}

async fn rig(extra: &str) -> Rig {
    let db = TempDb(std::env::temp_dir().join(format!(
        "sipfence-proxy-{}-{:x}.db",
        std::process::id(),
        rand::random::<u64>()
    )));
    let text = format!(
        "[transaction]\nt1_ms = {}\nt2_ms = 400\n\
         [voicemail]\ndir = {:?}\n\
         [[extension]]\nnumber = \"100\"\npassword = \"pw\"\n\
         [[extension]]\nnumber = \"101\"\npassword = \"pw\"\n\
         [[extension]]\nnumber = \"102\"\npassword = \"pw\"\n{extra}\n",
        T1.as_millis(),
        format!("{}.voicemail", db.0.display()),
    );
    let config = Arc::new(Config::parse(&text, "test.toml").unwrap());
    let store = Store::open(&db.0, config.storage.synchronous, Grouping::immediate(16)).unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let timers = Timers {
        t1: T1,
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
        j: 64 * T1,
    };
    let location = Arc::new(Location::default());
    let stats = Arc::new(Stats::default());
    let core = Arc::new(Core {
        config: config.clone(),
        directory: Directory::default(),
        auth: Authenticator::new([7; 32], Duration::from_secs(60)),
        algorithms: Vec::new(),
        registrar: Registrar::new(location, store.clone(), config.registrar.clone()),
        transactions: Transactions::new(timers),
        out: Outbound::new(vec![Arc::new(socket)]),
        stats: stats.clone(),
        guard: Arc::new(Guard::new(64, Vec::new())),
        stun: Arc::new(crate::stun::Responder::new("sipfence-test", stats)),
        chain: RwLock::new(Arc::new(Chain::empty())),
        store,
        proxy: Proxy::new(
            T1,
            Duration::from_millis(400),
            Duration::from_millis(config.calls.max_duration_ms),
        ),
        keepalive: Default::default(),
        voicemail: Arc::new(crate::voicemail::Voicemail::load(&config, 0).unwrap()),
        mailer: Arc::new(crate::mail::Mailer::spawn(
            Arc::new(crate::mail::MailQueue::open(&db.0, "vm@localhost").unwrap()),
            Default::default(),
        )),
    });
    Rig {
        core,
        caller: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        _db: db,
    }
}

/// A phone of `extension`, registered from its own socket.
async fn phone(rig: &Rig, extension: &str) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    rig.core.registrar.location.restore(vec![StoredBinding {
        tenant: String::new(),
        extension: extension.into(),
        key: format!("sip:{extension}@{addr}"),
        contact: format!("sip:{extension}@{addr}"),
        source: addr.to_string(),
        transport: "UDP".into(),
        call_id: format!("reg-{addr}"),
        cseq: 1,
        expires_at_ms: crate::now_ms() + 3_600_000,
        registered_at_ms: crate::now_ms(),
        user_agent: None,
    }]);
    socket
}

fn udp_source(addr: SocketAddr) -> Source {
    Source {
        addr,
        transport: Transport::Udp,
        via: Route::UdpSocket(0),
    }
}

impl Rig {
    /// The caller (100) calls `number`, as the server would after
    /// authentication: transaction created, then the proxy.
    /// Returns the INVITE and the proxy's immediate answer (0: none yet).
    fn call(&self, number: &str) -> (Message, u16) {
        self.call_offering(number, None)
    }

    /// [`Rig::call`] with an SDP offer in the INVITE.
    fn call_offering(&self, number: &str, sdp: Option<&str>) -> (Message, u16) {
        let caller = self.caller.local_addr().unwrap();
        let mut text = format!(
            "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP {caller};branch=z9hG4bKc{:x};rport={};received=127.0.0.1\r\n\
Max-Forwards: 70\r\n\
From: <sip:100@127.0.0.1>;tag=caller\r\n\
To: <sip:{number}@127.0.0.1>\r\n\
Call-ID: call-{:x}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:100@{caller}>\r\n",
            rand::random::<u32>(),
            caller.port(),
            rand::random::<u64>(),
        );
        match sdp {
            Some(sdp) => text.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )),
            None => text.push_str("Content-Length: 0\r\n\r\n"),
        }
        let request = Message::parse(text.as_bytes()).unwrap();
        let key = Key::of(&request).unwrap();
        self.core.transactions.incoming(&key, false);
        let tenant = &self.core.config.tenants[0];
        let reply = self.core.proxy.start(
            &self.core,
            &request,
            &udp_source(caller),
            &key,
            tenant,
            "100",
            number,
            None,
        );
        match reply {
            crate::server::Reply::Now(code, _) => (request, code),
            _ => (request, 0),
        }
    }

    /// A phone answers a request it received with `code`.
    fn answer(&self, phone: &UdpSocket, request: &Message, code: u16, tag: &str) {
        let mut response = request.response(code, crate::sip::reason_phrase(code), Some(tag));
        let addr = phone.local_addr().unwrap();
        if (200..300).contains(&code) {
            response
                .headers
                .push("Contact", format!("<sip:phone@{addr}>"));
            for rr in request.headers.get_all("Record-Route") {
                response.headers.push("Record-Route", rr);
            }
        }
        self.core
            .proxy
            .on_response(&self.core, response, &udp_source(addr));
    }

    fn cancel(&self, invite: &Message) -> u16 {
        let mut cancel = super::forward::cancel_for(invite, None);
        cancel
            .headers
            .set("Via", invite.headers.get("Via").unwrap());
        let key = Key::of(&cancel).unwrap();
        match self.core.proxy.cancel(&self.core, &cancel, &key) {
            crate::server::Reply::Now(code, _) => code,
            _ => 0,
        }
    }
}

/// The next message on `socket`, within `within` of virtual time.
async fn recv(socket: &UdpSocket, within: Duration) -> Message {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(within, socket.recv_from(&mut buf))
        .await
        .expect("a message in time")
        .unwrap();
    Message::parse(&buf[..n]).unwrap()
}

/// The next message that is not a provisional response.
async fn recv_final(socket: &UdpSocket, within: Duration) -> Message {
    loop {
        let m = recv(socket, within).await;
        if m.code().is_none_or(|c| c >= 200) {
            return m;
        }
    }
}

fn method(m: &Message) -> Option<Method> {
    m.method().cloned()
}

#[tokio::test(start_paused = true)]
async fn unanswered_invite_is_retransmitted_with_timer_a_and_times_out_with_timer_b() {
    let rig = rig("").await;
    let phone = phone(&rig, "101").await;
    rig.call("101");
    let trying = recv(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(trying.code(), Some(100));
    let start = Instant::now();
    let first = recv(&phone, Duration::from_millis(1)).await;
    assert_eq!(method(&first), Some(Method::Invite));
    // Timer A: T1, 2*T1, 4*T1, ... after the first send (RFC 3261 17.1.1.2).
    let mut expected = Duration::ZERO;
    let mut interval = T1;
    for _ in 0..5 {
        let again = recv(&phone, 64 * T1).await;
        expected += interval;
        interval *= 2;
        assert_eq!(
            again.top_via().unwrap().branch(),
            first.top_via().unwrap().branch()
        );
        assert_eq!(start.elapsed(), expected);
    }
    // Timer B: 64*T1 without any response ends the branch with 408.
    let last = recv_final(&rig.caller, 64 * T1).await;
    assert_eq!(last.code(), Some(408));
    assert_eq!(start.elapsed(), 64 * T1);
}

#[tokio::test(start_paused = true)]
async fn a_ringing_phone_is_cancelled_when_the_ring_time_is_up() {
    let rig = rig("[calls]\nring_time_ms = 2000").await;
    let phone = phone(&rig, "101").await;
    rig.call("101");
    let start = Instant::now();
    let invite = recv(&phone, Duration::from_millis(1)).await;
    rig.answer(&phone, &invite, 180, "p1");
    let cancel = recv(&phone, Duration::from_secs(5)).await;
    assert_eq!(method(&cancel), Some(Method::Cancel));
    assert_eq!(start.elapsed(), Duration::from_millis(2000));
    assert_eq!(
        cancel.top_via().unwrap().branch(),
        invite.top_via().unwrap().branch()
    );
    let answer = recv_final(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(answer.code(), Some(480));
    // The phone's 487 is ACKed hop by hop.
    rig.answer(&phone, &invite, 487, "p1");
    let ack = recv(&phone, Duration::from_millis(1)).await;
    assert_eq!(method(&ack), Some(Method::Ack));
}

#[tokio::test(start_paused = true)]
async fn first_answer_wins_and_the_other_phones_are_cancelled() {
    let rig = rig("").await;
    let (a, b, c) = (
        phone(&rig, "101").await,
        phone(&rig, "101").await,
        phone(&rig, "101").await,
    );
    rig.call("101");
    let ia = recv(&a, Duration::from_millis(1)).await;
    let ib = recv(&b, Duration::from_millis(1)).await;
    let ic = recv(&c, Duration::from_millis(1)).await;
    assert_eq!(
        ia.headers.get("Record-Route"),
        ib.headers.get("Record-Route")
    );
    rig.answer(&a, &ia, 180, "a");
    rig.answer(&b, &ib, 180, "b");
    // c has sent nothing yet: it may only be cancelled once it rings (9.1).
    rig.answer(&b, &ib, 200, "b");
    let ok = recv_final(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(ok.code(), Some(200));
    assert!(ok.headers.get("To").unwrap().contains("tag=b"));
    assert_eq!(ok.vias().unwrap().len(), 1, "our Via is removed");
    let cancel_a = recv(&a, Duration::from_millis(1)).await;
    assert_eq!(method(&cancel_a), Some(Method::Cancel));
    assert!(cancel_a
        .headers
        .get("Reason")
        .unwrap()
        .contains("cause=200"));
    rig.answer(&c, &ic, 180, "c");
    let cancel_c = recv(&c, Duration::from_millis(1)).await;
    assert_eq!(method(&cancel_c), Some(Method::Cancel));
    // A second 2xx (a race) still reaches the caller (16.7 step 10).
    rig.answer(&a, &ia, 200, "a");
    let second = recv(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(second.code(), Some(200));
    assert!(second.headers.get("To").unwrap().contains("tag=a"));
    assert_eq!(
        rig.core.proxy.counts().1,
        2,
        "two dialogs, the caller ends the second"
    );
}

#[tokio::test(start_paused = true)]
async fn when_all_fail_the_best_response_goes_back_and_every_failure_is_acked() {
    let rig = rig("").await;
    let (a, b) = (phone(&rig, "101").await, phone(&rig, "101").await);
    rig.call("101");
    let ia = recv(&a, Duration::from_millis(1)).await;
    let ib = recv(&b, Duration::from_millis(1)).await;
    rig.answer(&a, &ia, 503, "a");
    assert_eq!(
        method(&recv(&a, Duration::from_millis(1)).await),
        Some(Method::Ack)
    );
    rig.answer(&b, &ib, 486, "b");
    assert_eq!(
        method(&recv(&b, Duration::from_millis(1)).await),
        Some(Method::Ack)
    );
    let answer = recv_final(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(answer.code(), Some(486));
}

#[tokio::test(start_paused = true)]
async fn a_6xx_ends_the_search_and_cancels_the_rest() {
    let rig = rig("").await;
    let (a, b) = (phone(&rig, "101").await, phone(&rig, "101").await);
    rig.call("101");
    let ia = recv(&a, Duration::from_millis(1)).await;
    let ib = recv(&b, Duration::from_millis(1)).await;
    rig.answer(&b, &ib, 180, "b");
    rig.answer(&a, &ia, 603, "a");
    let start = Instant::now();
    assert_eq!(
        method(&recv(&b, Duration::from_millis(1)).await),
        Some(Method::Cancel)
    );
    // b never answers its CANCEL: it is given up after 64*T1 and the 603,
    // the best response, goes back.
    let answer = recv_final(&rig.caller, 128 * T1).await;
    assert_eq!(answer.code(), Some(603));
    assert_eq!(start.elapsed(), 64 * T1);
}

#[tokio::test(start_paused = true)]
async fn hunt_group_rings_members_in_turn() {
    let rig = rig(HUNT_600).await;
    let (first, second) = (phone(&rig, "101").await, phone(&rig, "102").await);
    rig.call("600");
    let start = Instant::now();
    let i1 = recv(&first, Duration::from_millis(1)).await;
    rig.answer(&first, &i1, 180, "m1");
    // The second member rings only after the first member's time is up.
    let i2 = recv(&second, Duration::from_secs(5)).await;
    assert_eq!(method(&i2), Some(Method::Invite));
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert_eq!(
        method(&recv(&first, Duration::from_millis(1)).await),
        Some(Method::Cancel)
    );
    rig.answer(&second, &i2, 200, "m2");
    let ok = recv_final(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(ok.code(), Some(200));
}

#[tokio::test(start_paused = true)]
async fn a_busy_hunt_member_passes_the_call_on_at_once() {
    let rig = rig(HUNT_600).await;
    let (first, second) = (phone(&rig, "101").await, phone(&rig, "102").await);
    rig.call("600");
    let start = Instant::now();
    let i1 = recv(&first, Duration::from_millis(1)).await;
    rig.answer(&first, &i1, 486, "m1");
    let i2 = recv(&second, Duration::from_millis(1)).await;
    assert_eq!(method(&i2), Some(Method::Invite));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn caller_cancel_stops_every_branch_and_answers_487() {
    let rig = rig("").await;
    let (a, b) = (phone(&rig, "101").await, phone(&rig, "101").await);
    let (invite, _) = rig.call("101");
    let ia = recv(&a, Duration::from_millis(1)).await;
    let ib = recv(&b, Duration::from_millis(1)).await;
    rig.answer(&a, &ia, 180, "a");
    assert_eq!(rig.cancel(&invite), 200);
    let answer = recv_final(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(answer.code(), Some(487));
    assert_eq!(
        method(&recv(&a, Duration::from_millis(1)).await),
        Some(Method::Cancel)
    );
    // b had not rung yet: its CANCEL waits for its first provisional.
    rig.answer(&b, &ib, 180, "b");
    assert_eq!(
        method(&recv(&b, Duration::from_millis(1)).await),
        Some(Method::Cancel)
    );
    // A CANCEL for nothing gets 481.
    let mut stranger = invite.clone();
    stranger
        .headers
        .set("Via", "SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnone");
    assert_eq!(rig.cancel(&stranger), 481);
}

#[tokio::test(start_paused = true)]
async fn a_call_without_bye_is_ended_at_the_maximum_duration() {
    let rig = rig("[calls]\nmax_duration_ms = 60000").await;
    let phone = phone(&rig, "101").await;
    rig.call("101");
    let invite = recv(&phone, Duration::from_millis(1)).await;
    rig.answer(&phone, &invite, 200, "p");
    let start = Instant::now();
    assert_eq!(
        recv_final(&rig.caller, Duration::from_millis(1))
            .await
            .code(),
        Some(200)
    );
    assert_eq!(rig.core.proxy.counts().1, 1);
    let bye_callee = recv(&phone, Duration::from_secs(120)).await;
    assert_eq!(method(&bye_callee), Some(Method::Bye));
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert!(bye_callee.headers.get("To").unwrap().contains("tag=p"));
    let bye_caller = recv(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(method(&bye_caller), Some(Method::Bye));
    assert!(bye_caller.headers.get("From").unwrap().contains("tag=p"));
    assert_eq!(rig.core.proxy.counts().1, 0);
}

#[tokio::test(start_paused = true)]
async fn unregistered_callee_gets_480_and_unknown_number_404() {
    let rig = rig("").await;
    rig.call("101");
    assert_eq!(
        recv_final(&rig.caller, Duration::from_millis(1))
            .await
            .code(),
        Some(480)
    );
    assert_eq!(rig.call("999").1, 404);
    assert_eq!(rig.core.proxy.counts(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_member_calling_its_own_group_does_not_ring_itself() {
    let rig = rig(
        "[[ring_group]]\nnumber = \"600\"\nstrategy = \"ring-all\"\nmembers = [\"100\", \"101\"]\n",
    )
    .await;
    let (own, other) = (phone(&rig, "100").await, phone(&rig, "101").await);
    rig.call("600");
    assert_eq!(
        method(&recv(&other, Duration::from_millis(1)).await),
        Some(Method::Invite)
    );
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(Duration::from_secs(1), own.recv_from(&mut buf))
            .await
            .is_err(),
        "the caller's own phone must not ring"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_moves_to_the_no_answer_number() {
    let rig =
        rig("[[extension]]\nnumber = \"103\"\nring_time_ms = 1500\nno_answer = \"102\"\n").await;
    let (desk, backup) = (phone(&rig, "103").await, phone(&rig, "102").await);
    rig.call("103");
    let start = Instant::now();
    let first = recv(&desk, Duration::from_millis(1)).await;
    rig.answer(&desk, &first, 180, "d");
    let moved = recv(&backup, Duration::from_secs(5)).await;
    assert_eq!(method(&moved), Some(Method::Invite));
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert_eq!(
        method(&recv(&desk, Duration::from_millis(1)).await),
        Some(Method::Cancel)
    );
    rig.answer(&backup, &moved, 200, "b");
    let ok = recv_final(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(ok.code(), Some(200));
    assert!(ok.headers.get("To").unwrap().contains("tag=b"));
}

#[tokio::test(start_paused = true)]
async fn bye_goes_to_the_other_party_and_stops_the_duration_timer() {
    let rig = rig("[calls]\nmax_duration_ms = 60000").await;
    let phone = phone(&rig, "101").await;
    let (invite, _) = rig.call("101");
    let forwarded = recv(&phone, Duration::from_millis(1)).await;
    rig.answer(&phone, &forwarded, 200, "p");
    let ok = recv_final(&rig.caller, Duration::from_millis(1)).await;
    let caller = rig.caller.local_addr().unwrap();
    let route = ok.headers.get("Record-Route").unwrap().to_owned();
    let text = format!(
        "BYE sip:phone@{} SIP/2.0\r\n\
Via: SIP/2.0/UDP {caller};branch=z9hG4bKbye;rport\r\n\
Max-Forwards: 70\r\n\
Route: {route}\r\n\
From: {}\r\n\
To: {}\r\n\
Call-ID: {}\r\n\
CSeq: 2 BYE\r\n\
Content-Length: 0\r\n\r\n",
        phone.local_addr().unwrap(),
        invite.headers.get("From").unwrap(),
        ok.headers.get("To").unwrap(),
        invite.call_id().unwrap(),
    );
    let bye = Message::parse(text.as_bytes()).unwrap();
    let key = Key::of(&bye).unwrap();
    rig.core.transactions.incoming(&key, false);
    let _ = rig
        .core
        .proxy
        .in_dialog(&rig.core, &bye, &udp_source(caller), &key);
    let relayed = recv(&phone, Duration::from_millis(1)).await;
    assert_eq!(method(&relayed), Some(Method::Bye));
    assert!(
        relayed.headers.get("Route").is_none(),
        "our Route entry is removed"
    );
    assert_eq!(relayed.vias().unwrap().len(), 2);
    rig.answer(&phone, &relayed, 200, "p");
    assert_eq!(
        recv(&rig.caller, Duration::from_millis(1)).await.code(),
        Some(200)
    );
    assert_eq!(rig.core.proxy.counts(), (0, 0));
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(Duration::from_secs(120), phone.recv_from(&mut buf))
            .await
            .is_err(),
        "no BYE at the maximum duration of a call that has ended"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_carrying_our_own_via_is_a_loop() {
    let rig = rig("").await;
    let phone = phone(&rig, "101").await;
    let (invite, _) = rig.call("101");
    assert!(!rig.core.proxy.looped(&invite));
    let forwarded = recv(&phone, Duration::from_millis(1)).await;
    assert!(
        rig.core.proxy.looped(&forwarded),
        "what we sent, coming back"
    );
}

/// An SDP offer from the caller with its media on `port`.
fn offer(port: u16, formats: &str) -> String {
    format!(
        "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {formats}\r\n"
    )
}

#[tokio::test(start_paused = true)]
async fn unavailable_busy_and_no_answer_can_each_go_to_the_mailbox() {
    // The INVITEs carry no SDP: the mailbox refuses them with 488, which
    // shows the call reached it (the router alone would send 480 or 486).
    let no_sdp = |m: &Message| {
        m.code() == Some(488)
            && matches!(&m.start, crate::sip::StartLine::Response { reason, .. } if reason.contains("no SDP"))
    };
    // No phone registered.
    let rig1 = rig("unavailable = \"voicemail\"").await;
    rig1.call("102");
    let answer = recv_final(&rig1.caller, Duration::from_millis(1)).await;
    assert!(no_sdp(&answer), "{answer:?}");

    // Every phone busy.
    let rig2 = rig("busy = \"voicemail\"").await;
    let phone2 = phone(&rig2, "102").await;
    rig2.call("102");
    let invite = recv(&phone2, Duration::from_millis(1)).await;
    rig2.answer(&phone2, &invite, 486, "p");
    let answer = recv_final(&rig2.caller, Duration::from_millis(1)).await;
    assert!(no_sdp(&answer), "{answer:?}");

    // Nobody answers within the ring time: the phone is cancelled.
    let rig3 = rig("ring_time_ms = 1000\nno_answer = \"voicemail\"").await;
    let phone3 = phone(&rig3, "102").await;
    rig3.call("102");
    let invite = recv(&phone3, Duration::from_millis(1)).await;
    rig3.answer(&phone3, &invite, 180, "p");
    let start = Instant::now();
    let answer = recv_final(&rig3.caller, Duration::from_secs(2)).await;
    assert!(no_sdp(&answer), "{answer:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert_eq!(
        method(&recv(&phone3, Duration::from_millis(1)).await),
        Some(Method::Cancel)
    );
}

#[tokio::test(start_paused = true)]
async fn the_mailbox_answers_g711_with_sdp_and_refuses_other_codecs() {
    let rig = rig("unavailable = \"voicemail\"").await;
    let media = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = media.local_addr().unwrap().port();

    // G.729 only: nothing we can record.
    rig.call_offering("102", Some(&offer(port, "18")));
    let refused = recv_final(&rig.caller, Duration::from_millis(1)).await;
    assert_eq!(refused.code(), Some(488));

    // PCMA and PCMU offered: the first G.711 of the offer is chosen.
    rig.call_offering("102", Some(&offer(port, "18 8 0")));
    let ok = recv_final(&rig.caller, Duration::from_millis(100)).await;
    assert_eq!(ok.code(), Some(200));
    assert!(ok.to().unwrap().tag().is_some());
    assert_eq!(ok.headers.get("Content-Type"), Some("application/sdp"));
    let answer = String::from_utf8(ok.body.clone()).unwrap();
    assert!(answer.contains("c=IN IP4 127.0.0.1\r\n"), "{answer}");
    let m_line = answer.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    assert!(m_line.ends_with(" RTP/AVP 8"), "{answer}");
    // The greeting arrives as PCMA (payload type 8) at the offer's port.
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), media.recv_from(&mut buf))
        .await
        .expect("greeting RTP")
        .unwrap();
    assert_eq!((n, buf[1] & 0x7f), (12 + 160, 8));
    assert_eq!(rig.core.voicemail.in_progress(), 1);

    // No ACK ever comes: the 200 is sent again at T1, 2*T1, 4*T1 (capped at
    // T2), and after 64*T1 the mailbox ends the dialog with a BYE.
    let start = Instant::now();
    let mut again = 0;
    let bye = loop {
        let m = recv(&rig.caller, Duration::from_secs(10)).await;
        match m.code() {
            Some(200) => again += 1,
            // The unacknowledged 488 of the first call, retransmitted.
            Some(_) => {}
            None => break m,
        }
    };
    assert_eq!(method(&bye), Some(Method::Bye));
    assert!(again >= 5, "200 retransmitted {again} times");
    assert!(start.elapsed() >= 60 * T1, "{:?}", start.elapsed());
    assert_eq!(bye.call_id(), ok.call_id());
    assert_eq!(bye.from().unwrap().tag(), ok.to().unwrap().tag());
}
