/* Prometheus text exposition and histograms. */
#include "st_prom.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void text_reserve(struct st_text *t, size_t more)
{
    if (t->oom || t->len + more + 1 <= t->cap)
        return;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + more + 1)
        cap *= 2;
    char *p = realloc(t->p, cap);
    if (p == NULL) {
        t->oom = true;
        return;
    }
    t->p = p;
    t->cap = cap;
}

void st_text_printf(struct st_text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    text_reserve(t, (size_t)n);
    if (t->oom)
        return;
    if ((size_t)n < sizeof(small)) {
        memcpy(t->p + t->len, small, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    t->len += (size_t)n;
}

void st_text_escaped(struct st_text *t, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            st_text_printf(t, "\\%c", *s);
        else if (*s == '\n')
            st_text_printf(t, "\\n");
        else
            st_text_printf(t, "%c", *s);
    }
}

void st_text_free(struct st_text *t)
{
    free(t->p);
    *t = (struct st_text){0};
}

static const double latency_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                    0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                    1,      2.5,     5,      10,    30,     60};
const struct st_hist_bounds st_hist_latency = {latency_le,
                                               sizeof(latency_le) / sizeof(latency_le[0])};
static const double age_le[] = {1,    5,    15,   30,    60,    120,   300,    600,
                                1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800};
const struct st_hist_bounds st_hist_age = {age_le, sizeof(age_le) / sizeof(age_le[0])};

void st_hist_init(struct st_hist *h, const struct st_hist_bounds *b)
{
    h->b = b;
    for (unsigned i = 0; i <= ST_HIST_MAX_BUCKETS; i++)
        atomic_store(&h->count[i], 0);
    atomic_store(&h->sum_us, 0);
}

void st_hist_observe(struct st_hist *h, double seconds)
{
    if (!(seconds >= 0)) /* NaN or negative (clock steps): count as 0 */
        seconds = 0;
    unsigned i = 0;
    while (i < h->b->n && seconds > h->b->le[i])
        i++;
    atomic_fetch_add_explicit(&h->count[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)llround(seconds * 1e6), memory_order_relaxed);
}

void st_prom_head(struct st_text *t, const char *name, const char *type, const char *help)
{
    st_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void labels_out(struct st_text *t, const char *const *labels, const char *le)
{
    bool any = false;
    for (size_t i = 0; labels != NULL && labels[i] != NULL; i += 2) {
        st_text_printf(t, "%s%s=\"", any ? "," : "{", labels[i]);
        st_text_escaped(t, labels[i + 1] != NULL ? labels[i + 1] : "");
        st_text_printf(t, "\"");
        any = true;
    }
    if (le != NULL) {
        st_text_printf(t, "%sle=\"%s\"", any ? "," : "{", le);
        any = true;
    }
    if (any)
        st_text_printf(t, "}");
}

static void value_out(struct st_text *t, double v)
{
    if (isinf(v))
        st_text_printf(t, " %s\n", v > 0 ? "+Inf" : "-Inf");
    else if (isnan(v))
        st_text_printf(t, " NaN\n");
    else if (v == floor(v) && fabs(v) < 9.007199254740992e15)
        st_text_printf(t, " %.0f\n", v);
    else
        st_text_printf(t, " %.9g\n", v);
}

void st_prom_sample(struct st_text *t, const char *name, const char *const *labels, double v)
{
    st_text_printf(t, "%s", name);
    labels_out(t, labels, NULL);
    value_out(t, v);
}

void st_prom_hist(struct st_text *t, const char *name, const char *const *labels,
                  const struct st_hist *h)
{
    uint64_t cum = 0;
    for (unsigned i = 0; i <= h->b->n; i++) {
        cum += atomic_load_explicit(&h->count[i], memory_order_relaxed);
        char le[32];
        if (i < h->b->n)
            snprintf(le, sizeof(le), "%g", h->b->le[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        st_text_printf(t, "%s_bucket", name);
        labels_out(t, labels, le);
        value_out(t, (double)cum);
    }
    st_text_printf(t, "%s_sum", name);
    labels_out(t, labels, NULL);
    value_out(t, (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    st_text_printf(t, "%s_count", name);
    labels_out(t, labels, NULL);
    value_out(t, (double)cum);
}
