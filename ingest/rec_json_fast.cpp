/*
 * The fast JSON decoder (rec_json_fast.h): simdjson's DOM parser, then the checks of the
 * jansson decoder (rec_json.c) for the success path only. Any doubt declines, and the caller
 * runs the reference decoder.
 *
 * Why the results are the reference's, bit for bit:
 * - simdjson's DOM types a number as jansson does: int64 for integer syntax (so "-0" is the
 *   integer 0, as for jansson), double for a "." or an exponent; integers beyond int64 are a
 *   uint64 or an error (jansson: "too big integer"; u64 ids that large come as strings of
 *   digits, which both decoders read with st_parse_u64_dec), doubles beyond double range an error
 *   (jansson: "real number overflow"): we decline both. simdjson's doubles are correctly
 *   rounded, as glibc's strtod; the float is then (float)double, as the reference's
 *   (float)json_number_value, and an integer goes (float)(double)int64 as there.
 * - jansson rejects what simdjson lets through: "\u0000" in any string or key, duplicate keys
 *   in any object. Every string we keep is checked (no NUL, valid UTF-8 without surrogates);
 *   meta and any value we ignore are rebuilt as jansson values, which checks every key and
 *   string, and meta is then written by jansson's own json_dumpb, as in the reference.
 * - Whatever else differs (depth limits: simdjson 1024 < jansson 2048; lone surrogates) only
 *   makes simdjson reject, which declines.
 */
#include "rec_json_fast.h"

#include <jansson.h>
#include <new>
#include <openssl/evp.h>
#include <simdjson.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "rec_int.h"
#include "st_coding.h"
}

using simdjson::dom::element;
using simdjson::dom::element_type;

namespace
{

/* Past this the parser's buffers (a few times the message) are dropped at the next message. */
constexpr size_t keep_capacity = 16u << 20;

struct fast_state {
    simdjson::dom::parser parser;
    uint8_t *buf = nullptr; /* the message, copied with SIMDJSON_PADDING after it */
    size_t buf_cap = 0;
    ~fast_state()
    {
        free(buf);
    }
};

/* jansson's strings: UTF-8 (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF), no NUL. */
bool jansson_string(std::string_view s)
{
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    size_t n = s.size(), i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c >= 0x01 && c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false; /* NUL, a continuation byte, C0/C1, F5.. */
        }
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

/* The jansson value jansson would have parsed for e, or NULL where jansson would have rejected
 * the document (or on no memory). */
json_t *to_jansson(element e)
{
    switch (e.type()) {
    case element_type::OBJECT: {
        json_t *o = json_object();
        if (o == nullptr)
            return nullptr;
        for (auto kv : simdjson::dom::object(e)) {
            if (!jansson_string(kv.key) ||
                json_object_getn(o, kv.key.data(), kv.key.size()) != nullptr) {
                json_decref(o);
                return nullptr;
            }
            json_t *v = to_jansson(kv.value);
            if (v == nullptr || json_object_setn_new_nocheck(o, kv.key.data(), kv.key.size(), v)) {
                json_decref(o);
                return nullptr;
            }
        }
        return o;
    }
    case element_type::ARRAY: {
        json_t *a = json_array();
        if (a == nullptr)
            return nullptr;
        for (element x : simdjson::dom::array(e)) {
            json_t *v = to_jansson(x);
            if (v == nullptr || json_array_append_new(a, v)) {
                json_decref(a);
                return nullptr;
            }
        }
        return a;
    }
    case element_type::INT64:
        return json_integer(int64_t(e));
    case element_type::DOUBLE:
        return json_real(double(e)); /* simdjson has no NaN or infinity */
    case element_type::STRING: {
        std::string_view s = std::string_view(e);
        return jansson_string(s) ? json_stringn_nocheck(s.data(), s.size()) : nullptr;
    }
    case element_type::BOOL:
        return json_boolean(bool(e));
    case element_type::NULL_VALUE:
        return json_null();
    case element_type::UINT64: /* jansson: "too big integer" */
        return nullptr;
    }
    return nullptr;
}

/* A value the reference does not look at (a delete's vector): only whether jansson took it. */
bool jansson_accepts(element e)
{
    switch (e.type()) {
    case element_type::INT64:
    case element_type::DOUBLE:
    case element_type::BOOL:
    case element_type::NULL_VALUE:
        return true;
    case element_type::STRING:
        return jansson_string(std::string_view(e));
    default: {
        json_t *j = to_jansson(e);
        json_decref(j);
        return j != nullptr;
    }
    }
}

constexpr unsigned K_ID = 1, K_TS = 2, K_VECTOR = 4, K_B64 = 8, K_META = 16, K_OP = 32,
                   K_COLLECTION = 64, K_RECORDS = 128;

unsigned key_of(std::string_view k)
{
    static const struct {
        const char *name;
        unsigned bit;
    } keys[] = {
        {"id", K_ID},     {"ts", K_TS}, {"vector", K_VECTOR},         {"vector_b64", K_B64},
        {"meta", K_META}, {"op", K_OP}, {"collection", K_COLLECTION}, {"records", K_RECORDS}};
    for (const auto &x : keys)
        if (k == x.name)
            return x.bit;
    return 0;
}

struct fields {
    element v[8]; /* by bit position */
    unsigned seen = 0;
    element get(unsigned bit) const
    {
        return v[__builtin_ctz(bit)];
    }
    bool has(unsigned bit) const
    {
        return (seen & bit) != 0;
    }
};

/* The object's keys into f; false for a key outside allowed or one seen twice. */
bool collect(simdjson::dom::object o, unsigned allowed, fields &f)
{
    for (auto kv : o) {
        unsigned b = key_of(kv.key);
        if ((b & allowed) == 0 || f.has(b))
            return false;
        f.seen |= b;
        f.v[__builtin_ctz(b)] = kv.value;
    }
    return true;
}

bool parse_vector(struct rec_decoder *d, const struct rec_collection *c, const fields &f,
                  const float **out)
{
    float *v = static_cast<float *>(st_arena_alloc(&d->arena, size_t(c->dim) * sizeof(float) + 3));
    if (v == nullptr)
        return false;
    if (f.has(K_VECTOR)) {
        element e = f.get(K_VECTOR);
        if (e.type() != element_type::ARRAY)
            return false;
        simdjson::dom::array a(e);
        if (a.size() != c->dim)
            return false;
        uint32_t j = 0;
        for (element x : a) {
            if (j == c->dim) /* more than size() said (it saturates) */
                return false;
            element_type t = x.type();
            if (t == element_type::DOUBLE)
                v[j++] = float(double(x));
            else if (t == element_type::INT64)
                v[j++] = float(double(int64_t(x)));
            else
                return false;
        }
        if (j != c->dim)
            return false;
    } else {
        element e = f.get(K_B64);
        if (e.type() != element_type::STRING)
            return false;
        std::string_view s(e);
        size_t n = s.size();
        if (n % 4 != 0 || !jansson_string(s))
            return false;
        size_t pad = (n >= 1 && s[n - 1] == '=') + (n >= 2 && s[n - 2] == '=');
        if (n / 4 * 3 - pad != size_t(c->dim) * 4)
            return false;
        auto *raw = static_cast<unsigned char *>(st_arena_alloc(&d->arena, n / 4 * 3 + 1));
        if (raw == nullptr ||
            EVP_DecodeBlock(raw, reinterpret_cast<const unsigned char *>(s.data()), int(n)) !=
                int(n / 4 * 3))
            return false;
        for (uint32_t j = 0; j < c->dim; j++) { /* little-endian float32 */
            uint32_t u = uint32_t(raw[4 * j]) | uint32_t(raw[4 * j + 1]) << 8 |
                         uint32_t(raw[4 * j + 2]) << 16 | uint32_t(raw[4 * j + 3]) << 24;
            memcpy(&v[j], &u, 4);
        }
    }
    *out = v;
    return true;
}

bool parse_record(struct rec_decoder *d, const struct rec_collection *c, element e, bool single,
                  struct rec_record *r)
{
    if (e.type() != element_type::OBJECT)
        return false;
    fields f;
    if (!collect(simdjson::dom::object(e),
                 K_ID | K_TS | K_VECTOR | K_B64 | K_META | K_OP | (single ? K_COLLECTION : 0), f) ||
        !f.has(K_ID))
        return false;
    memset(r, 0, sizeof(*r));
    element id = f.get(K_ID);
    if (c->u64_ids) {
        uint64_t v = 0;
        if (id.type() == element_type::INT64 && int64_t(id) >= 0) {
            v = uint64_t(int64_t(id));
        } else if (id.type() == element_type::STRING) {
            /* Digits only: no escape, NUL or UTF-8 question for jansson to differ on. */
            std::string_view s(id);
            if (!st_parse_u64_dec(s.data(), s.size(), &v))
                return false;
        } else {
            return false;
        }
        auto *be = static_cast<uint8_t *>(st_arena_alloc(&d->arena, 8));
        if (be == nullptr)
            return false;
        st_put_be64(be, v);
        r->id = be;
        r->id_len = 8;
    } else {
        if (id.type() != element_type::STRING)
            return false;
        std::string_view s(id);
        if (s.size() < 1 || s.size() > REC_ID_MAX || !jansson_string(s))
            return false;
        r->id = reinterpret_cast<const uint8_t *>(s.data()); /* the parser's, until next parse */
        r->id_len = uint32_t(s.size());
    }
    r->ts = REC_TS_ABSENT;
    if (f.has(K_TS)) {
        element ts = f.get(K_TS);
        if (ts.type() != element_type::INT64 || int64_t(ts) == REC_TS_ABSENT)
            return false;
        r->ts = int64_t(ts);
    }
    r->op = REC_UPSERT;
    if (f.has(K_OP)) {
        element op = f.get(K_OP);
        if (op.type() != element_type::STRING)
            return false;
        std::string_view s(op);
        if (s == "delete")
            r->op = REC_DELETE;
        else if (s != "upsert")
            return false;
    }
    if (f.has(K_VECTOR) && f.has(K_B64))
        return false;
    if (r->op == REC_UPSERT) {
        if (!f.has(K_VECTOR) && !f.has(K_B64))
            return false;
        if (!parse_vector(d, c, f, &r->vec))
            return false;
    } else { /* the reference ignores a delete's vector: jansson only had to parse it */
        if ((f.has(K_VECTOR) && !jansson_accepts(f.get(K_VECTOR))) ||
            (f.has(K_B64) && !jansson_accepts(f.get(K_B64))))
            return false;
    }
    if (f.has(K_META) && f.get(K_META).type() != element_type::NULL_VALUE) {
        element m = f.get(K_META);
        if (m.type() != element_type::OBJECT)
            return false;
        json_t *j = to_jansson(m);
        if (j == nullptr)
            return false;
        size_t n = json_dumpb(j, nullptr, 0, JSON_COMPACT);
        auto *out =
            n <= REC_META_MAX ? static_cast<char *>(st_arena_alloc(&d->arena, n ? n : 1)) : nullptr;
        bool ok = out != nullptr && json_dumpb(j, out, n, JSON_COMPACT) == n;
        json_decref(j);
        if (!ok)
            return false;
        r->meta = reinterpret_cast<const uint8_t *>(out);
        r->meta_len = uint32_t(n);
    }
    return true;
}

/* Parses p[0, len) from a copy in st.buf: simdjson reads up to SIMDJSON_PADDING bytes past the
 * end, and a message's (or a frame's last meta's) bytes end where librdkafka's buffer may. */
bool parse_copy(fast_state &st, const void *p, size_t len, element &root)
{
    if (len + simdjson::SIMDJSON_PADDING > st.buf_cap) {
        size_t cap = len + simdjson::SIMDJSON_PADDING;
        auto *b = static_cast<uint8_t *>(realloc(st.buf, cap));
        if (b == nullptr)
            return false;
        st.buf = b;
        st.buf_cap = cap;
    }
    memcpy(st.buf, p, len);
    memset(st.buf + len, ' ', simdjson::SIMDJSON_PADDING);
    return st.parser.parse(st.buf, len, false).get(root) == simdjson::SUCCESS;
}

bool decode(struct rec_decoder *d, fast_state &st, const struct rec_schema *s, const void *value,
            size_t len, struct rec_batch *out)
{
    element root;
    if (!parse_copy(st, value, len, root) || root.type() != element_type::OBJECT)
        return false;
    fields rf;
    simdjson::dom::object ro(root);
    bool single = true;
    for (auto kv : ro)
        if (kv.key == "records")
            single = false;
    if (!single && !collect(ro, K_RECORDS | K_COLLECTION, rf))
        return false;
    if (single) { /* the record's own keys are checked by parse_record */
        for (auto kv : ro)
            if (kv.key == "collection") {
                if (rf.has(K_COLLECTION))
                    return false;
                rf.seen |= K_COLLECTION;
                rf.v[__builtin_ctz(K_COLLECTION)] = kv.value;
            }
    }
    const struct rec_collection *c = s->fallback;
    if (rf.has(K_COLLECTION)) {
        element cn = rf.get(K_COLLECTION);
        if (cn.type() != element_type::STRING)
            return false;
        std::string_view name(cn);
        if (!jansson_string(name))
            return false;
        c = rec_find(s, name.data(), name.size());
    }
    if (c == nullptr)
        return false;
    uint32_t n = 1;
    simdjson::dom::array recs;
    if (!single) {
        element re = rf.get(K_RECORDS);
        if (re.type() != element_type::ARRAY)
            return false;
        recs = simdjson::dom::array(re);
        size_t sz = recs.size();
        if (sz == 0 || sz >= 0xFFFFFF)
            return false;
        n = uint32_t(sz);
    }
    if (rec_reserve(d, n) != ST_OK)
        return false;
    if (single) {
        if (!parse_record(d, c, root, true, &d->recs[0]))
            return false;
    } else {
        uint32_t i = 0;
        for (element e : recs)
            if (!parse_record(d, c, e, false, &d->recs[i++]))
                return false;
    }
    out->coll = c;
    out->n = n;
    out->recs = d->recs;
    out->zero_copy = false;
    return true;
}

/* d's parser, made at first use; after a large message a fresh one (its ids are no longer
 * needed). Throws on no memory. */
fast_state &state_of(struct rec_decoder *d)
{
    auto *st = static_cast<fast_state *>(d->fast);
    if (st != nullptr && st->parser.capacity() > keep_capacity) {
        delete st;
        d->fast = st = nullptr;
    }
    if (st == nullptr)
        d->fast = st = new fast_state();
    return *st;
}

/* Whether jansson, given the document simdjson parsed into e, parses it too: every key and
 * string without NUL or surrogates (jansson_string), no integer beyond int64 (simdjson's
 * UINT64). Duplicate keys are fine: the frame's meta is loaded without JSON_REJECT_DUPLICATES.
 * simdjson's depth limit (1024) bounds the recursion. */
bool jansson_parses(element e)
{
    switch (e.type()) {
    case element_type::OBJECT:
        for (auto kv : simdjson::dom::object(e))
            if (!jansson_string(kv.key) || !jansson_parses(kv.value))
                return false;
        return true;
    case element_type::ARRAY:
        for (element x : simdjson::dom::array(e))
            if (!jansson_parses(x))
                return false;
        return true;
    case element_type::STRING:
        return jansson_string(std::string_view(e));
    case element_type::INT64:
    case element_type::DOUBLE:
    case element_type::BOOL:
    case element_type::NULL_VALUE:
        return true;
    case element_type::UINT64: /* jansson: "too big integer" */
        return false;
    }
    return false;
}

} // namespace

extern "C" bool rec_json_fast_decode(struct rec_decoder *d, const struct rec_schema *s,
                                     const void *value, size_t len, struct rec_batch *out)
{
    try {
        return decode(d, state_of(d), s, value, len, out);
    } catch (...) { /* no memory: the reference decides */
        return false;
    }
}

extern "C" bool rec_json_fast_meta(struct rec_decoder *d, const void *meta, size_t len)
{
    try {
        element root;
        return parse_copy(state_of(d), meta, len, root) && root.type() == element_type::OBJECT &&
               jansson_parses(root);
    } catch (...) {
        return false;
    }
}

extern "C" void rec_json_fast_free(void *fast)
{
    delete static_cast<fast_state *>(fast);
}
