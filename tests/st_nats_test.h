/* st_nats_test.h — NATS helpers for integration tests. */
#ifndef ST_NATS_TEST_H
#define ST_NATS_TEST_H

#include <check.h>
#include <stdbool.h>
#include <string.h>
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

/* Does the stream hold any strata.* subject (the daemons' sealed/expired/indexed events)? */
static inline bool st_nats_stream_is_strata(jsCtx *js, const char *stream)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    bool strata = false;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) != NATS_OK)
        return false; /* gone meanwhile */
    for (int i = 0; i < si->Config->SubjectsLen && !strata; i++)
        strata = strncmp(si->Config->Subjects[i], "strata.", 7) == 0;
    jsStreamInfo_Destroy(si);
    return strata;
}

/* Removes the JetStream streams of the server at url that hold strata.* subjects: a stream an
 * earlier test left would hold the subjects the daemons' stream needs (two streams may not
 * share subjects). Only one test at a time may run daemons against the fixture's server (the
 * ctest RESOURCE_LOCK strata_nats_subjects, tests/CMakeLists.txt): without it this would
 * delete a running test's stream under its daemons. Other tests' streams (their own subjects)
 * are left alone. */
static inline void st_nats_clean(const char *url)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(url, &nc, &js);
    jsStreamNamesList *l = NULL;
    if (js_StreamNames(&l, js, NULL, &jerr) == NATS_OK) {
        for (int i = 0; i < l->Count; i++) {
            if (!st_nats_stream_is_strata(js, l->List[i]))
                continue;
            natsStatus s = js_DeleteStream(js, l->List[i], NULL, &jerr);
            ck_assert_msg(s == NATS_OK || jerr == JSStreamNotFoundErr, "deleting stream %s: %s",
                          l->List[i], natsStatus_GetText(s));
        }
        jsStreamNamesList_Destroy(l);
    }
    st_nats_js_close(nc, js);
}

#endif
