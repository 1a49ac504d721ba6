/* st_nats_test.h — NATS helpers for integration tests. */
#ifndef ST_NATS_TEST_H
#define ST_NATS_TEST_H

#include <check.h>
#include <nats/nats.h>

/* Fails the test with nats.c's text when expr is not NATS_OK. */
#define NATS_OK(expr)                                                                              \
    do {                                                                                           \
        natsStatus s_ = (expr);                                                                    \
        ck_assert_msg(s_ == NATS_OK, "%s: %s (%s)", #expr, natsStatus_GetText(s_),                 \
                      nats_GetLastError(NULL));                                                    \
    } while (0)

/* A connection to url with a JetStream context; fails the test when either cannot be had. */
static inline void st_nats_js_open(const char *url, natsConnection **nc, jsCtx **js)
{
    NATS_OK(natsConnection_ConnectTo(nc, url));
    NATS_OK(natsConnection_JetStream(js, *nc, NULL));
}

static inline void st_nats_js_close(natsConnection *nc, jsCtx *js)
{
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

/* Removes every JetStream stream of the server at url: a stream an earlier test left would
 * hold the strata.* subjects (the test nats-server is ours). */
static inline void st_nats_clean(const char *url)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(url, &nc, &js);
    jsStreamNamesList *l = NULL;
    if (js_StreamNames(&l, js, NULL, &jerr) == NATS_OK) {
        for (int i = 0; i < l->Count; i++)
            NATS_OK(js_DeleteStream(js, l->List[i], NULL, &jerr));
        jsStreamNamesList_Destroy(l);
    }
    st_nats_js_close(nc, js);
}

#endif
