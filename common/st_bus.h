/*
 * st_bus.h — the message bus the daemons use (SPEC.md §7): NATS core + JetStream through
 * nats.c, or, for `strata demo` only, an in-process bus with the same semantics
 * (nats.url: "embedded", SPEC.md §9). Callers never see nats.c types.
 *
 * What the daemons need, and so all this offers:
 *   - core publish/subscribe with NATS subject wildcards (`*` one token, `>` the rest):
 *     node announcements (strata.nodes.<node_id>);
 *   - a JetStream stream (file storage; subjects; created, or narrowed from an old catch-all),
 *     publish with a Nats-Msg-Id for de-duplication, waiting for the stream's ack;
 *   - a durable pull consumer (explicit ack, ack wait, deliver all, max ack pending) with
 *     fetch, ack, nak (redeliver now) and in-progress (restart the ack timer).
 *
 * Connections: st_bus_connect returns once connected (or fails within connect_timeout_ms);
 * after that the bus reconnects by itself forever and reports state changes to on_state.
 * After st_bus_close returns, no callback of that connection (on_state, subscription
 * callbacks) runs or is running: callers may free what they passed as ctx. (With nats.c
 * this waits, bounded by close_wait_ms, for its closed callback; if that never comes,
 * st_bus_close leaks its own small state rather than the caller's. Fault point for tests:
 * bus.nats.late_callback delays each nats.c connection callback by 5 ms.) Subscriptions still
 * open are removed by st_bus_close; pull consumers must be closed before it; fetched messages
 * may outlive both (ack/nak then fail or are no-ops, and the message is simply redelivered).
 *
 * The embedded bus: every st_bus_connect("embedded") in one process reaches the same bus; it
 * keeps streams in memory (gone at exit) and is always connected. Its semantics match
 * JetStream's for everything above: msg-id de-duplication within the stream's duplicate
 * window (2 min), per-durable ack state, redelivery of unacked messages after ack_wait, nak
 * redelivers at once, in-progress resets the timer, a message counts as pending until acked,
 * and delivery order is stream order (redeliveries that are due first). A core publish to a
 * subject a stream holds is stored, and stored messages reach core subscribers, as in NATS.
 * st_bus_flush returns at once (a publish is in the subscribers' queues when it returns).
 * Each subscription is delivered by a thread of its own.
 * It has no limits, unlike a server: every stored message (acked or not) and every durable
 * stays in memory until the process exits, and a subscription's queue grows without bound
 * while its callback is slow (NATS would drop as a slow consumer). That suits strata demo's
 * few hundred events; it is not for long runs (the daemons refuse "embedded").
 *
 * Threads: everything here is thread-safe. Subscription callbacks run on a bus thread, one
 * at a time per subscription; they must not call st_bus_close or st_bus_unsubscribe on their
 * own connection/subscription.
 */
#ifndef ST_BUS_H
#define ST_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

#define ST_BUS_EMBEDDED "embedded"

struct st_bus;      /* one connection */
struct st_bus_sub;  /* a core subscription */
struct st_bus_pull; /* a JetStream durable pull consumer */
struct st_bus_msg;  /* a message fetched from a pull consumer (ack/nak/in-progress) */

enum st_bus_state {
    ST_BUS_DISCONNECTED = 1, /* lost the server; reconnecting */
    ST_BUS_RECONNECTED = 2,  /* back (subscriptions and consumers resume by themselves) */
};

/*
 * Credentials and TLS for a NATS server (all optional; the embedded bus ignores them). At most
 * one of user+password, token, creds_file. TLS is on when the URL is tls://… or any tls_* is
 * set: the server's certificate chain is verified against tls_ca (PEM; without it the
 * system's default CAs), and tls_cert + tls_key (PEM, both or neither) are presented to a
 * server that asks for a client certificate. Strings are borrowed for the call.
 */
struct st_bus_auth {
    const char *user, *password; /* both or neither */
    const char *token;
    const char *creds_file; /* a NATS .creds file (user JWT and nkey seed) */
    const char *tls_ca, *tls_cert, *tls_key;
    /* The host name the server's certificate must name (NULL: the chain alone is verified:
     * nats.c checks no host name by itself). */
    const char *tls_server_name;
};

struct st_bus_opts {
    const char *url;                /* nats://host:port[,nats://…] or ST_BUS_EMBEDDED */
    const struct st_bus_auth *auth; /* NULL: none */
    const char *name;               /* connection name shown by the server (may be NULL) */
    int connect_timeout_ms;         /* 0: 2000 */
    int reconnect_wait_ms;          /* 0: 250 */
    int close_wait_ms; /* st_bus_close waits this long for nats.c's closed callback; 0: 5000 */
    /* Optional; runs on a bus thread. */
    void (*on_state)(void *ctx, enum st_bus_state state);
    void *ctx;
};

/* Connects (ST_EIO with the reason in err when the server cannot be reached in time). */
int st_bus_connect(const struct st_bus_opts *o, struct st_bus **out, struct st_err *err) ST_WUR;

/* Closes the connection (see the header comment for what that guarantees). NULL is a no-op. */
void st_bus_close(struct st_bus *b);

/* Whether the connection is up right now. */
bool st_bus_connected(struct st_bus *b);

/* The URL it was opened with, any password in it replaced by "***" (for messages). */
const char *st_bus_url(const struct st_bus *b);

/*
 * url with the password of every "user:password@" in it replaced by "***" (a token alone,
 * "token@", likewise), for log lines and errors: nats://u:***@host:4222. Always
 * NUL-terminated; truncated to cap.
 */
void st_bus_url_redact(const char *url, char *out, size_t cap);

/* ---- core NATS ------------------------------------------------------------------------ */

/* Publishes (fire and forget; buffered by the client while reconnecting). */
int st_bus_publish(struct st_bus *b, const char *subject, const void *data, size_t len) ST_WUR;

/* Waits until everything published so far reached the server (ST_ETIMEDOUT). */
int st_bus_flush(struct st_bus *b, int timeout_ms) ST_WUR;

typedef void (*st_bus_msg_fn)(void *ctx, const char *subject, const void *data, size_t len);

/* Subscribes to a subject (wildcards allowed); fn runs for each message. */
int st_bus_subscribe(struct st_bus *b, const char *subject, st_bus_msg_fn fn, void *ctx,
                     struct st_bus_sub **out, struct st_err *err) ST_WUR;

/* Drains and removes a subscription: after it returns fn is not running and never will.
 * NULL is a no-op. Call before st_bus_close of its connection. */
void st_bus_unsubscribe(struct st_bus_sub *s);

/* ---- JetStream ------------------------------------------------------------------------ */

/*
 * Makes sure stream `name` exists: created with file storage and `subjects` if missing. An
 * existing stream is left as it is, except that one holding exactly the single subject
 * `narrow` (may be NULL: never) is updated to `subjects` (narrowing an old catch-all is how
 * upgrades go; a subject list an operator chose is kept). *narrowed (may be NULL) says
 * whether that happened; a failed narrowing is logged and is not an error (the stream
 * works). ST_EIO with the server's reason when the stream can be neither found nor created.
 */
int st_bus_stream_ensure(struct st_bus *b, const char *name, const char *const *subjects,
                         size_t n_subjects, const char *narrow, bool *narrowed,
                         struct st_err *err) ST_WUR;

/* Publishes to the stream that holds `subject` and waits up to timeout_ms for its ack.
 * msg_id (may be NULL) de-duplicates: a second publish with the same id is acked and not
 * stored again. ST_ETIMEDOUT, ST_EIO (no stream, not connected) with the reason in err. */
int st_bus_js_publish(struct st_bus *b, const char *subject, const void *data, size_t len,
                      const char *msg_id, int timeout_ms, struct st_err *err) ST_WUR;

struct st_bus_pull_opts {
    const char *stream;  /* the stream */
    const char *durable; /* the durable consumer's name (created if missing) */
    const char *filter;  /* subject filter, e.g. "strata.>" */
    int64_t ack_wait_ms; /* unacked messages come back after this */
    int max_ack_pending; /* 0: 10000 */
};

/* Binds to (or creates) a durable pull consumer: deliver all, explicit ack. */
int st_bus_pull_open(struct st_bus *b, const struct st_bus_pull_opts *o, struct st_bus_pull **out,
                     struct st_err *err) ST_WUR;

/* Fetches up to max messages, waiting up to timeout_ms for the first. Returns the number
 * fetched (0 on a timeout) or a negative ST_E* (ST_EIO while disconnected). The caller owns
 * each message and must free it (after ack/nak, or without: then it comes back after
 * ack_wait). */
int st_bus_pull_fetch(struct st_bus_pull *p, struct st_bus_msg **msgs, int max, int timeout_ms,
                      struct st_err *err) ST_WUR;

/* Unbinds (the durable consumer stays on the server). NULL is a no-op. Not while another
 * thread fetches from p; messages fetched from it may outlive it. */
void st_bus_pull_close(struct st_bus_pull *p);

const char *st_bus_msg_subject(const struct st_bus_msg *m);
const void *st_bus_msg_data(const struct st_bus_msg *m, size_t *len);
/* How many times this message has been delivered to the durable (1 the first time). */
uint64_t st_bus_msg_delivered(const struct st_bus_msg *m);

int st_bus_msg_ack(struct st_bus_msg *m) ST_WUR;         /* done: never redelivered */
int st_bus_msg_nak(struct st_bus_msg *m) ST_WUR;         /* redeliver now */
int st_bus_msg_in_progress(struct st_bus_msg *m) ST_WUR; /* restart its ack timer */
void st_bus_msg_free(struct st_bus_msg *m);              /* NULL is a no-op */

#endif
