/* collector.core._fastbook: the book side and the one-change fast path in C.
 *
 * The same book as collector/core/book.py (the pure-Python reference, which the tests hold
 * this to, byte for byte): exact, keyed by the price's value, never by a float. A side
 * is one contiguous array of levels sorted with the best level last (bids ascending,
 * asks descending), each holding the exchange's own price and size text.
 *
 * The sort key is a 64-bit integer that orders prices exactly: the number of integer
 * digits, then the first 17 significant digits, then a flag set when digits were left
 * out. Two keys that differ order their prices; equal keys with the flag set (prices
 * of more than 17 digits, rare) are ordered by comparing the texts digit by digit.
 * Prices must be plain decimals ([0-9]+(.[0-9]+)?), as the feed validates them.
 *
 * `load()` builds a side from a whole snapshot with one sort, O(n log n) in any order:
 * the exchange sends a snapshot best level first, which set() would insert at the front
 * of the array one level at a time, O(n^2) (200,000 levels took 8.7 s).
 *
 * `change()` is V1Stream's fast path (collector/gemini/v1_stream.py) in C: the common update
 * frame (in sequence, its events all valid changes and trades) read from its bytes,
 * applied, and its records rendered as collector/core/format.py defines them (held to it
 * byte for byte by a golden test); or None when the frame is anything else, with
 * nothing touched (the Python general path then parses, validates and explains).
 * It reads the frame's JSON itself, a strict subset: building orjson's dict of a frame
 * and reading it back cost about as much as all the rest (`python -m bench.stages`:
 * Stream.feed 2.4 us per frame from orjson's dict, 1.2 us from the bytes).
 */
#define PY_SSIZE_T_CLEAN
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000 /* the stable ABI of 3.11: one abi3 build for 3.11 and later */
#endif
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SIG_DIGITS 17
#define LEN_SHIFT 58
#define LEN_FAR 32 /* integer part of 32 digits or more: keys do not order them */

typedef struct {
    uint64_t key;
    PyObject *price; /* str, as the exchange wrote it */
    PyObject *size;  /* str */
} Level;

typedef struct {
    PyObject_HEAD
    Level *lv;
    Py_ssize_t n, cap;
    int bids;
    char *top; /* top-N JSON, valid while top_depth >= 0 */
    Py_ssize_t top_len, top_cap, top_depth;
    PyObject *frag; /* top as an orjson.Fragment, for top_json(); NULL until asked */
} SideObject;

/* A plain decimal's canonical digits (no leading integer zeros, no trailing fraction
 * zeros) and its key. */
typedef struct {
    const char *ip, *fp;
    Py_ssize_t il, fl;
    uint64_t key;
} Num;

static PyObject *Decimal, *Fragment;
static char *out_buf; /* change()'s scratch buffer (the GIL guards it) */
static Py_ssize_t out_cap;
static PyObject *k_updates, *k_trades, *k_latency, *k_observe;

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Parse [0-9]+(\.[0-9]+)?; 0 if `s` is anything else. */
static int
parse_num(const char *s, Py_ssize_t len, Num *out)
{
    Py_ssize_t i = 0;
    while (i < len && is_digit(s[i]))
        i++;
    if (i == 0)
        return 0;
    Py_ssize_t int_end = i, fl = 0;
    if (i < len) {
        if (s[i] != '.' || i + 1 == len)
            return 0;
        for (Py_ssize_t j = i + 1; j < len; j++)
            if (!is_digit(s[j]))
                return 0;
        fl = len - i - 1;
    }
    const char *ip = s, *fp = fl ? s + int_end + 1 : s + len;
    Py_ssize_t il = int_end;
    while (il > 0 && *ip == '0') {
        ip++;
        il--;
    }
    while (fl > 0 && fp[fl - 1] == '0')
        fl--;
    uint64_t p = 0;
    int k = 0;
    for (Py_ssize_t a = 0; a < il && k < SIG_DIGITS; a++, k++)
        p = p * 10 + (uint64_t)(ip[a] - '0');
    for (Py_ssize_t a = 0; a < fl && k < SIG_DIGITS; a++, k++)
        p = p * 10 + (uint64_t)(fp[a] - '0');
    for (; k < SIG_DIGITS; k++)
        p *= 10;
    uint64_t lc = il >= LEN_FAR ? LEN_FAR : (uint64_t)il;
    out->ip = ip;
    out->il = il;
    out->fp = fp;
    out->fl = fl;
    out->key = (lc << LEN_SHIFT) | (p << 1) | (uint64_t)(il + fl > SIG_DIGITS);
    return 1;
}

/* The text of a str known to be ASCII (checked when it entered a side). */
static const char *
ascii(PyObject *s, Py_ssize_t *len)
{
    return PyUnicode_AsUTF8AndSize(s, len); /* an ASCII str's own buffer: no copy, no failure */
}

/* parse_num on an ASCII str */
static int
parse_str(PyObject *s, Num *out)
{
    Py_ssize_t len;
    const char *text = ascii(s, &len);
    return parse_num(text, len, out);
}

/* Parse a str argument as a plain decimal, or set ValueError. */
static int
parse_arg(PyObject *s, const char *what, Num *out)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s must be str", what);
        return 0;
    }
    /* parse_num takes only ASCII digits and '.': a str it accepts is ASCII */
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(s, &len);
    if (text == NULL)
        PyErr_Clear(); /* lone surrogates: not a decimal either */
    if (text == NULL || !parse_num(text, len, out)) {
        PyErr_Format(PyExc_ValueError, "%s %R is not a plain decimal", what, s);
        return 0;
    }
    return 1;
}

static int
cmp_digits(const Num *a, const Num *b)
{
    if (a->il != b->il)
        return a->il < b->il ? -1 : 1;
    int c = memcmp(a->ip, b->ip, (size_t)a->il);
    if (c == 0) {
        /* fractions: missing digits are zeros, and neither ends in a zero */
        c = memcmp(a->fp, b->fp, (size_t)(a->fl < b->fl ? a->fl : b->fl));
        if (c == 0)
            return (a->fl > b->fl) - (a->fl < b->fl);
    }
    return c < 0 ? -1 : 1;
}

/* Order two prices by their keys: -1, 0 or 1 when the keys decide, KEYS_TIE when
 * only their digits can (both far, or equal with the flag set). */
#define KEYS_TIE 2
static inline int
cmp_keys(uint64_t a, uint64_t b)
{
    if (a != b && ((a >> LEN_SHIFT) < LEN_FAR || (b >> LEN_SHIFT) < LEN_FAR))
        return a < b ? -1 : 1;
    if (a == b && !(a & 1))
        return 0;
    return KEYS_TIE;
}

/* Order a level's price against `t` by value. */
static int
cmp_value(const Level *l, const Num *t)
{
    int c = cmp_keys(l->key, t->key);
    if (c != KEYS_TIE)
        return c;
    Num ln;
    parse_str(l->price, &ln);
    return cmp_digits(&ln, t);
}

/* Order two parsed prices by value. */
static int
cmp_num(const Num *a, const Num *b)
{
    int c = cmp_keys(a->key, b->key);
    return c != KEYS_TIE ? c : cmp_digits(a, b);
}

/* Where `t` is, or would go, in the side's order (best last): searched from the best
 * end outwards, as most changes land near the touch. *found says which. */
static Py_ssize_t
locate(SideObject *s, const Num *t, int *found)
{
    const int sign = s->bids ? 1 : -1;
    Py_ssize_t hi = s->n, j = s->n - 1, step = 1, lo;
    *found = 0;
    while (j >= 0) { /* all of [hi, n) order after t */
        int c = sign * cmp_value(&s->lv[j], t);
        if (c == 0) {
            *found = 1;
            return j;
        }
        if (c < 0)
            break;
        hi = j;
        j = hi - step;
        step <<= 1;
    }
    lo = j < 0 ? 0 : j + 1;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        int c = sign * cmp_value(&s->lv[mid], t);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int
same_text(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    Py_ssize_t la, lb;
    const char *da = ascii(a, &la), *db = ascii(b, &lb);
    return la == lb && memcmp(da, db, (size_t)la) == 0;
}

static void
stale_top(SideObject *s)
{
    s->top_depth = -1;
    Py_CLEAR(s->frag);
}

/* Set a level (`size` zero removes it); 1 if the top `depth` changed, 0 if not, -1 on
 * error. Both texts are parsed already. */
static int
side_set(SideObject *s, PyObject *price, const Num *p, PyObject *size, const Num *q,
         Py_ssize_t depth)
{
    int found;
    Py_ssize_t i = locate(s, p, &found);
    if (q->il == 0 && q->fl == 0) { /* zero in any spelling */
        if (!found)
            return 0;
        Level *l = &s->lv[i];
        Py_DECREF(l->price);
        Py_DECREF(l->size);
        memmove(l, l + 1, (size_t)(s->n - i - 1) * sizeof(Level));
        s->n--;
        if (s->n - i >= depth) /* its distance from the best level */
            return 0;
        stale_top(s);
        return 1;
    }
    if (found) {
        Level *l = &s->lv[i];
        if (same_text(l->size, size) && same_text(l->price, price))
            return 0;
        PyObject *old_price = l->price, *old_size = l->size;
        l->price = Py_NewRef(price);
        l->size = Py_NewRef(size);
        Py_DECREF(old_price);
        Py_DECREF(old_size);
        l->key = p->key; /* the same value, maybe another spelling: the same key */
        if (i < s->n - depth)
            return 0;
        stale_top(s);
        return 1;
    }
    if (s->n == s->cap) {
        Py_ssize_t cap = s->cap ? s->cap * 2 : 64;
        Level *lv = PyMem_Realloc(s->lv, (size_t)cap * sizeof(Level));
        if (lv == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->lv = lv;
        s->cap = cap;
    }
    Level *l = &s->lv[i];
    memmove(l + 1, l, (size_t)(s->n - i) * sizeof(Level));
    Py_INCREF(price);
    Py_INCREF(size);
    l->key = p->key;
    l->price = price;
    l->size = size;
    s->n++;
    if (s->n - 1 - i >= depth)
        return 0;
    stale_top(s);
    return 1;
}

static char *
put(char *w, const char *s, Py_ssize_t len)
{
    memcpy(w, s, (size_t)len);
    return w + len;
}

#define PUT(w, lit) put((w), (lit), sizeof(lit) - 1)

/* The top `depth` levels as JSON, [["price","size"],...], kept until a set() changes
 * the top. NULL (MemoryError) on failure. */
static const char *
top_json(SideObject *s, Py_ssize_t depth, Py_ssize_t *len)
{
    if (s->top_depth != depth) {
        stale_top(s);
        Py_ssize_t m = s->n < depth ? s->n : depth, need = 2;
        for (Py_ssize_t k = 0; k < m; k++) {
            Level *l = &s->lv[s->n - 1 - k];
            Py_ssize_t lp, lq;
            ascii(l->price, &lp);
            ascii(l->size, &lq);
            need += lp + lq + 8;
        }
        if (need > s->top_cap) {
            char *buf = PyMem_Realloc(s->top, (size_t)need);
            if (buf == NULL) {
                PyErr_NoMemory();
                return NULL;
            }
            s->top = buf;
            s->top_cap = need;
        }
        char *w = s->top;
        *w++ = '[';
        for (Py_ssize_t k = 0; k < m; k++) {
            Level *l = &s->lv[s->n - 1 - k];
            Py_ssize_t lp, lq;
            const char *dp = ascii(l->price, &lp), *dq = ascii(l->size, &lq);
            if (k)
                *w++ = ',';
            w = put(PUT(w, "[\""), dp, lp);
            w = put(PUT(w, "\",\""), dq, lq);
            w = PUT(w, "\"]");
        }
        *w++ = ']';
        s->top_len = w - s->top;
        s->top_depth = depth;
    }
    *len = s->top_len;
    return s->top;
}

/* best bid >= best ask, exactly */
static int
crossed(SideObject *bids, SideObject *asks)
{
    if (bids->n == 0 || asks->n == 0)
        return 0;
    Level *ask = &asks->lv[asks->n - 1];
    Num b;
    parse_str(ask->price, &b);
    return cmp_value(&bids->lv[bids->n - 1], &b) >= 0;
}

/* ---- the Side type -------------------------------------------------------------------- */

static PyObject *
Side_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"bids", NULL};
    int bids;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "p", kwlist, &bids))
        return NULL;
    SideObject *s = (SideObject *)PyType_GenericAlloc(type, 0);
    if (s == NULL)
        return NULL;
    s->bids = bids;
    s->top_depth = -1;
    return (PyObject *)s;
}

static void
Side_dealloc(SideObject *s)
{
    for (Py_ssize_t i = 0; i < s->n; i++) {
        Py_DECREF(s->lv[i].price);
        Py_DECREF(s->lv[i].size);
    }
    PyMem_Free(s->lv);
    PyMem_Free(s->top);
    Py_XDECREF(s->frag);
    PyTypeObject *type = Py_TYPE((PyObject *)s);
    freefunc free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    free(s);
    Py_DECREF(type); /* an instance of a heap type holds a reference to it */
}

static Py_ssize_t
Side_len(SideObject *s)
{
    return s->n;
}

static int
depth_arg(PyObject *o, Py_ssize_t *depth)
{
    *depth = PyLong_AsSsize_t(o);
    if (*depth == -1 && PyErr_Occurred())
        return 0;
    if (*depth < 0) {
        PyErr_SetString(PyExc_ValueError, "depth must not be negative");
        return 0;
    }
    return 1;
}

static PyObject *
Side_set(SideObject *s, PyObject *const *args, Py_ssize_t nargs)
{
    Num p, q;
    Py_ssize_t depth;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "set(price, size, depth)");
        return NULL;
    }
    if (!parse_arg(args[0], "price", &p) || !parse_arg(args[1], "size", &q)
        || !depth_arg(args[2], &depth))
        return NULL;
    int r = side_set(s, args[0], &p, args[1], &q, depth);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
Side_best(SideObject *s, PyObject *Py_UNUSED(ignored))
{
    if (s->n == 0)
        Py_RETURN_NONE;
    return PyObject_CallFunctionObjArgs(Decimal, s->lv[s->n - 1].price, NULL);
}

static PyObject *
Side_top(SideObject *s, PyObject *arg)
{
    Py_ssize_t depth;
    if (!depth_arg(arg, &depth))
        return NULL;
    Py_ssize_t m = s->n < depth ? s->n : depth;
    PyObject *out = PyList_New(m);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < m; k++) {
        Level *l = &s->lv[s->n - 1 - k];
        PyObject *t = PyTuple_Pack(2, l->price, l->size);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SetItem(out, k, t); /* steals t; out is new, so it cannot fail */
    }
    return out;
}

static PyObject *
Side_top_json(SideObject *s, PyObject *arg)
{
    Py_ssize_t depth, len;
    if (!depth_arg(arg, &depth))
        return NULL;
    const char *json = top_json(s, depth, &len);
    if (json == NULL)
        return NULL;
    if (s->frag == NULL) {
        PyObject *b = PyBytes_FromStringAndSize(json, len);
        if (b == NULL)
            return NULL;
        s->frag = PyObject_CallFunctionObjArgs(Fragment, b, NULL);
        Py_DECREF(b);
        if (s->frag == NULL)
            return NULL;
    }
    return Py_NewRef(s->frag);
}


/* ---- load: a whole side at once --------------------------------------------------------- */

typedef struct {
    Num p;
    Py_ssize_t order; /* its place in the input: of one value, the last wins */
    PyObject *price, *size; /* owned */
    int zero;
} Entry;

static int
cmp_entry(const void *a, const void *b)
{
    const Entry *x = a, *y = b;
    int c = cmp_num(&x->p, &y->p);
    if (c != 0)
        return c;
    return (x->order > y->order) - (x->order < y->order);
}

static void
free_entries(Entry *e, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(e[i].price);
        Py_DECREF(e[i].size);
    }
    PyMem_Free(e);
}

/* Read (price, size) pairs into entries; the number read, or -1 on error. */
static Py_ssize_t
read_levels(PyObject *list, Entry *e)
{
    Py_ssize_t n = PyList_Size(list);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PySequence_Tuple(PyList_GetItem(list, i));
        if (pair == NULL || PyTuple_Size(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "load(): a level must be a (price, size) pair");
            Py_XDECREF(pair);
            return -(i + 1);
        }
        PyObject *price = PyTuple_GetItem(pair, 0), *size = PyTuple_GetItem(pair, 1);
        Num q;
        if (!parse_arg(price, "price", &e[i].p) || !parse_arg(size, "size", &q)) {
            Py_DECREF(pair);
            return -(i + 1);
        }
        e[i].order = i;
        e[i].price = Py_NewRef(price);
        e[i].size = Py_NewRef(size);
        e[i].zero = q.il == 0 && q.fl == 0;
        Py_DECREF(pair);
    }
    return n;
}

static PyObject *
Side_load(SideObject *s, PyObject *levels)
{
    PyObject *seq = PySequence_List(levels);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyList_Size(seq);
    Entry *e = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Entry));
    if (e == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    Py_ssize_t got = read_levels(seq, e);
    Py_DECREF(seq);
    if (got < 0) { /* -(the failed level + 1): the ones before it are owned */
        free_entries(e, -got - 1);
        return NULL;
    }
    qsort(e, (size_t)n, sizeof(Entry), cmp_entry);
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) /* the last of each value, unless its size is zero */
        kept += !e[i].zero && (i + 1 == n || cmp_num(&e[i].p, &e[i + 1].p) != 0);
    Py_ssize_t cap = kept > 64 ? kept : 64;
    Level *lv = PyMem_Malloc((size_t)cap * sizeof(Level));
    if (lv == NULL) {
        free_entries(e, n);
        return PyErr_NoMemory();
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (e[i].zero || (i + 1 < n && cmp_num(&e[i].p, &e[i + 1].p) == 0))
            continue;
        /* ascending by value: bids as they are, asks reversed (best last on both) */
        Level *l = &lv[s->bids ? k : kept - 1 - k];
        l->key = e[i].p.key;
        l->price = Py_NewRef(e[i].price);
        l->size = Py_NewRef(e[i].size);
        k++;
    }
    free_entries(e, n);
    for (Py_ssize_t i = 0; i < s->n; i++) {
        Py_DECREF(s->lv[i].price);
        Py_DECREF(s->lv[i].size);
    }
    PyMem_Free(s->lv);
    s->lv = lv;
    s->n = kept;
    s->cap = cap;
    stale_top(s);
    Py_RETURN_NONE;
}

static PyMethodDef Side_methods[] = {
    {"set", (PyCFunction)(void (*)(void))Side_set, METH_FASTCALL,
     "set(price, size, depth): set a level (size zero removes it); True if the top "
     "`depth` changed."},
    {"load", (PyCFunction)Side_load, METH_O,
     "load(levels): replace the side with (price, size) pairs in any order, as set() of each "
     "in turn on an empty side would (of one value the last wins, a zero size removes it), "
     "with one sort."},
    {"best", (PyCFunction)Side_best, METH_NOARGS, "The best price as a Decimal, or None."},
    {"top", (PyCFunction)Side_top, METH_O, "top(depth): the best `depth` levels, best first."},
    {"top_json", (PyCFunction)Side_top_json, METH_O,
     "top_json(depth): top(depth) as JSON, an orjson.Fragment."},
    {NULL},
};

static PyType_Slot Side_slots[] = {
    {Py_tp_dealloc, (void *)Side_dealloc},
    {Py_sq_length, (void *)Side_len},
    {Py_tp_doc, "One side of an exact full-depth book (collector.core.book.PySide in C)."},
    {Py_tp_methods, Side_methods},
    {Py_tp_new, (void *)Side_new},
    {0, NULL},
};

static PyType_Spec Side_spec = {
    .name = "collector.core._fastbook.Side",
    .basicsize = sizeof(SideObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Side_slots,
};

static PyTypeObject *SideType; /* made from Side_spec when the module loads */

/* ---- the fast path ----------------------------------------------------------------------- */

#define MAX_EVENTS 16
#define MAX_INT_DIGITS 18 /* ints read here stay below 10**18: no overflow in C */

/* The frame's bytes, read as a strict subset of JSON: strings of printable ASCII
 * without escapes, integers of up to 18 digits, true/false/null, and only the
 * nesting a v1 update frame has. Every frame read this way is valid JSON that orjson
 * reads to the same values; any other (escapes, non-ASCII, floats, big numbers,
 * unknown nesting, a known key twice) is left to the general path. */
typedef struct {
    const char *p, *end;
} Scan;

typedef struct {
    const char *s;
    Py_ssize_t len;
} Text;

static void
skip_ws(Scan *sc)
{
    while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\n' || *sc->p == '\r' || *sc->p == '\t'))
        sc->p++;
}

static int
next(Scan *sc, char c) /* skip whitespace; consume `c` if it is next */
{
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == c) {
        sc->p++;
        return 1;
    }
    return 0;
}

static int
scan_str(Scan *sc, Text *t)
{
    if (!next(sc, '"'))
        return 0;
    const char *a = sc->p;
    while (sc->p < sc->end && *sc->p != '"') {
        unsigned char c = (unsigned char)*sc->p;
        if (c < 0x20 || c > 0x7e || c == '\\')
            return 0;
        sc->p++;
    }
    if (sc->p == sc->end)
        return 0;
    t->s = a;
    t->len = sc->p++ - a;
    return 1;
}

static int
scan_int(Scan *sc, long long *v)
{
    skip_ws(sc);
    int neg = sc->p < sc->end && *sc->p == '-';
    const char *a = sc->p + neg, *e = a;
    long long x = 0;
    while (e < sc->end && is_digit(*e) && e - a < MAX_INT_DIGITS) /* never overflows */
        x = x * 10 + (*e++ - '0');
    Py_ssize_t n = e - a;
    if (n == 0 || (n > 1 && *a == '0'))
        return 0; /* a 19th digit, '.', 'e' after it: the caller's grammar rejects them */
    sc->p = e;
    *v = neg ? -x : x;
    return 1;
}

static int
word(Scan *sc, const char *w, Py_ssize_t len)
{
    if (sc->end - sc->p < len || memcmp(sc->p, w, (size_t)len) != 0)
        return 0;
    sc->p += len;
    return 1;
}

/* the value of a key not read here: a string, an integer, true, false or null */
static int
skip_value(Scan *sc)
{
    Text t;
    long long v;
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == '"')
        return scan_str(sc, &t);
    return word(sc, "true", 4) || word(sc, "false", 5) || word(sc, "null", 4) || scan_int(sc, &v);
}

static int
key_is(const Text *k, const char *name)
{
    return (size_t)k->len == strlen(name) && memcmp(k->s, name, (size_t)k->len) == 0;
}

static int
text_is(const Text *t, const char *want)
{
    return t->s != NULL && key_is(t, want);
}

typedef struct {
    SideObject *side; /* NULL for a trade */
    Text price, size, maker; /* size: a change's remaining, a trade's amount */
    Num p, q;
    long long tid;
} Event;

/* Mark a known key seen; 0 if it was seen before (then the general path decides). */
static int
once(int *seen, int bit)
{
    if (*seen & bit)
        return 0;
    *seen |= bit;
    return 1;
}

/* One event of the common kinds (a change, or a trade that is not a block trade),
 * checked as collector.gemini.v1._event checks it; 0 for anything else. */
static int
scan_event(Scan *sc, SideObject *bids, SideObject *asks, Event *ev)
{
    Text type = {0}, side = {0}, remaining = {0}, amount = {0}, k;
    int seen = 0, has_tid = 0;
    memset(ev, 0, sizeof *ev);
    if (!next(sc, '{'))
        return 0;
    do {
        if (!scan_str(sc, &k) || !next(sc, ':'))
            return 0;
        int ok;
        if (key_is(&k, "type"))
            ok = once(&seen, 1) && scan_str(sc, &type);
        else if (key_is(&k, "side"))
            ok = once(&seen, 2) && scan_str(sc, &side);
        else if (key_is(&k, "price"))
            ok = once(&seen, 4) && scan_str(sc, &ev->price);
        else if (key_is(&k, "remaining"))
            ok = once(&seen, 8) && scan_str(sc, &remaining);
        else if (key_is(&k, "amount"))
            ok = once(&seen, 16) && scan_str(sc, &amount);
        else if (key_is(&k, "makerSide"))
            ok = once(&seen, 32) && scan_str(sc, &ev->maker);
        else if (key_is(&k, "tid"))
            ok = once(&seen, 64) && (has_tid = scan_int(sc, &ev->tid));
        else
            ok = skip_value(sc);
        if (!ok)
            return 0;
    } while (next(sc, ','));
    if (!next(sc, '}'))
        return 0;
    if (text_is(&type, "change")) {
        ev->side = text_is(&side, "bid") ? bids : text_is(&side, "ask") ? asks : NULL;
        if (ev->side == NULL)
            return 0;
        ev->size = remaining;
    } else if (text_is(&type, "trade")) {
        if (!has_tid || !(text_is(&ev->maker, "bid") || text_is(&ev->maker, "ask")
                          || text_is(&ev->maker, "auction")))
            return 0;
        ev->size = amount;
    } else {
        return 0;
    }
    return ev->price.s != NULL && ev->size.s != NULL
           && parse_num(ev->price.s, ev->price.len, &ev->p)
           && parse_num(ev->size.s, ev->size.len, &ev->q)
           && (ev->side == NULL || ev->p.il != 0 || ev->p.fl != 0); /* a change's price > 0 */
}

/* The frame's top level: an update with its sequence number, eventId, timestampms and
 * 1 to MAX_EVENTS events, each scanned into `ev`; the number of events, or 0. */
static Py_ssize_t
scan_update(Scan *sc, SideObject *bids, SideObject *asks, long long *seq, long long *event_id,
            long long *ts, Event *ev)
{
    Text type = {0}, k;
    int seen = 0;
    Py_ssize_t n = 0;
    if (!next(sc, '{'))
        return 0;
    do {
        if (!scan_str(sc, &k) || !next(sc, ':'))
            return 0;
        int ok;
        if (key_is(&k, "type"))
            ok = once(&seen, 1) && scan_str(sc, &type) && text_is(&type, "update");
        else if (key_is(&k, "socket_sequence"))
            ok = once(&seen, 2) && scan_int(sc, seq);
        else if (key_is(&k, "eventId"))
            ok = once(&seen, 4) && scan_int(sc, event_id);
        else if (key_is(&k, "timestampms"))
            ok = once(&seen, 8) && scan_int(sc, ts);
        else if (key_is(&k, "events")) {
            ok = once(&seen, 16) && next(sc, '[');
            while (ok && n < MAX_EVENTS && (ok = scan_event(sc, bids, asks, &ev[n++]))
                   && next(sc, ','))
                ;
            ok = ok && next(sc, ']'); /* an event more than MAX_EVENTS is not ']' */
        } else
            ok = skip_value(sc);
        if (!ok)
            return 0;
    } while (next(sc, ','));
    if (!next(sc, '}') || seen != 31)
        return 0;
    skip_ws(sc);
    return sc->p == sc->end ? n : 0;
}

static char *
put_int(char *w, long long v)
{
    char tmp[24];
    int k = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *w++ = '-';
    while (k)
        *w++ = tmp[--k];
    return w;
}

static char *
put_text(char *w, const Text *t)
{
    return put(w, t->s, t->len);
}

/* counts.<name> += n */
static int
add_count(PyObject *counts, PyObject *name, Py_ssize_t n)
{
    PyObject *v = PyObject_GetAttr(counts, name), *sum;
    if (v == NULL)
        return -1;
    PyObject *d = PyLong_FromSsize_t(n);
    sum = d == NULL ? NULL : PyNumber_Add(v, d);
    Py_DECREF(v);
    Py_XDECREF(d);
    if (sum == NULL)
        return -1;
    int r = PyObject_SetAttr(counts, name, sum);
    Py_DECREF(sum);
    return r;
}

/* counts.latency.observe(value) unless counts.latency is None */
static int
observe_latency(PyObject *counts, long long value)
{
    PyObject *h = PyObject_GetAttr(counts, k_latency);
    if (h == NULL)
        return -1;
    int r = 0;
    if (h != Py_None) {
        PyObject *v = PyLong_FromLongLong(value), *done = NULL;
        if (v != NULL)
            done = PyObject_CallMethodObjArgs(h, k_observe, v, NULL);
        r = done == NULL ? -1 : 0;
        Py_XDECREF(v);
        Py_XDECREF(done);
    }
    Py_DECREF(h);
    return r;
}

static PyObject *
ascii_str(const Text *t)
{
    return PyUnicode_DecodeASCII(t->s, t->len, NULL); /* scan_str let only ASCII through */
}

/* change(raw, expected, bids, asks, depth, emit_every, symbol, recv_ns, counts)
 *     -> bytes | False | None
 *
 * The common v1 frame, read from its bytes `raw`: an update at socket_sequence
 * `expected` whose events (1 to MAX_EVENTS) are all changes and trades (not block
 * trades), each valid; `symbol` is the symbol as JSON. Applied as Stream._update
 * applies it: the records are the frame's trades in order, then its book record (when
 * it had a change, and the top changed or emit_every); counts.updates and
 * counts.trades are added to and the latency observed. None: any other frame; nothing
 * was touched. False: applied, and the book is now crossed (the caller raises). */
static PyObject *
change(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyBytes_CheckExact(args[0]) || !PyObject_TypeCheck(args[2], SideType)
        || !PyObject_TypeCheck(args[3], SideType) || !PyBytes_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "change(raw: bytes, expected: int, bids: Side, asks: Side, depth: int, "
                        "emit_every: bool, symbol: bytes, recv_ns: int, counts)");
        return NULL;
    }
    PyObject *symbol = args[6], *counts = args[8];
    SideObject *bids = (SideObject *)args[2], *asks = (SideObject *)args[3];
    long long expected = PyLong_AsLongLong(args[1]), recv_ns = PyLong_AsLongLong(args[7]);
    Py_ssize_t depth;
    int emit_every = PyObject_IsTrue(args[5]);
    if ((expected == -1 || recv_ns == -1 || emit_every < 0) && PyErr_Occurred())
        return NULL;
    if (!depth_arg(args[4], &depth))
        return NULL;

    const char *raw = PyBytes_AsString(args[0]);
    Scan sc = {raw, raw + PyBytes_Size(args[0])};
    long long seq, event_id, ts;
    Event ev[MAX_EVENTS];
    Py_ssize_t n = scan_update(&sc, bids, asks, &seq, &event_id, &ts, ev);
    if (n == 0 || seq != expected)
        Py_RETURN_NONE;
    Py_ssize_t trades = 0, size = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (ev[i].side == NULL) {
            trades++;
            size += ev[i].price.len + ev[i].size.len + ev[i].maker.len + 20;
        }

    /* the frame is ours from here */
    int had_change = 0, top_changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ev[i].side == NULL)
            continue;
        had_change = 1;
        PyObject *price = ascii_str(&ev[i].price), *sz = ascii_str(&ev[i].size);
        int r = price == NULL || sz == NULL
                    ? -1
                    : side_set(ev[i].side, price, &ev[i].p, sz, &ev[i].q, depth);
        Py_XDECREF(price);
        Py_XDECREF(sz);
        if (r < 0)
            return NULL;
        top_changed |= r;
    }
    if ((had_change && add_count(counts, k_updates, 1) < 0)
        || (trades && add_count(counts, k_trades, trades) < 0)
        || observe_latency(counts, recv_ns / 1000000 - (recv_ns % 1000000 < 0) - ts) < 0)
        return NULL;
    if (top_changed && crossed(bids, asks))
        Py_RETURN_FALSE;
    int book = had_change && (top_changed || emit_every);
    if (!book && !trades)
        return PyBytes_FromStringAndSize(NULL, 0);

    Py_ssize_t lb = 0, la = 0, ls = PyBytes_Size(symbol);
    const char *jb = NULL, *ja = NULL, *sym = PyBytes_AsString(symbol);
    if (book) {
        jb = top_json(bids, depth, &lb);
        ja = top_json(asks, depth, &la);
        if (jb == NULL || ja == NULL)
            return NULL;
    }
    /* each record: keys and punctuation under 160 bytes, up to 6 ints of 20 */
    size += (trades + book) * (ls + 160 + 6 * 20) + lb + la;
    /* rendered into a scratch buffer, then copied into a bytes of the exact size (the
     * stable ABI has no way to shrink a bytes object) */
    if (size > out_cap) {
        char *buf = PyMem_Realloc(out_buf, (size_t)size);
        if (buf == NULL)
            return PyErr_NoMemory();
        out_buf = buf;
        out_cap = size;
    }
    char *start = out_buf, *w = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ev[i].side != NULL)
            continue;
        w = put(PUT(w, "{\"type\":\"trade\",\"symbol\":"), sym, ls);
        w = put_int(PUT(w, ",\"seq\":"), seq);
        w = put_int(PUT(w, ",\"event_id\":"), event_id);
        w = put_int(PUT(w, ",\"tid\":"), ev[i].tid);
        w = put_text(PUT(w, ",\"price\":\""), &ev[i].price);
        w = put_text(PUT(w, "\",\"amount\":\""), &ev[i].size);
        w = put_text(PUT(w, "\",\"maker_side\":\""), &ev[i].maker);
        w = put_int(PUT(w, "\",\"exchange_ms\":"), ts);
        w = put_int(PUT(w, ",\"recv_ns\":"), recv_ns);
        w = PUT(w, "}\n");
    }
    if (book) {
        w = put(PUT(w, "{\"type\":\"book\",\"symbol\":"), sym, ls);
        w = put_int(PUT(w, ",\"seq\":"), seq);
        w = put_int(PUT(w, ",\"event_id\":"), event_id);
        w = put_int(PUT(w, ",\"exchange_ms\":"), ts);
        w = put_int(PUT(w, ",\"recv_ns\":"), recv_ns);
        w = put(PUT(w, ",\"bids\":"), jb, lb);
        w = put(PUT(w, ",\"asks\":"), ja, la);
        w = PUT(w, "}\n");
    }
    return PyBytes_FromStringAndSize(start, w - start);
}

static PyMethodDef module_methods[] = {
    {"change", (PyCFunction)(void (*)(void))change, METH_FASTCALL,
     "change(raw, expected, bids, asks, depth, emit_every, symbol, recv_ns, counts): "
     "the common v1 update frame, from its bytes straight to the book and its records."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "collector.core._fastbook",
    .m_doc = "The book side and the one-change fast path in C (see collector/core/book.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot != NULL;
}

PyMODINIT_FUNC
PyInit__fastbook(void)
{
    SideType = (PyTypeObject *)PyType_FromSpec(&Side_spec);
    if (SideType == NULL)
        return NULL;
    if (!intern(&k_updates, "updates") || !intern(&k_trades, "trades")
        || !intern(&k_latency, "latency") || !intern(&k_observe, "observe"))
        return NULL;
    PyObject *decimal = PyImport_ImportModule("decimal"), *orjson = PyImport_ImportModule("orjson");
    if (decimal == NULL || orjson == NULL) {
        Py_XDECREF(decimal);
        Py_XDECREF(orjson);
        return NULL;
    }
    Decimal = PyObject_GetAttrString(decimal, "Decimal");
    Fragment = PyObject_GetAttrString(orjson, "Fragment");
    Py_DECREF(decimal);
    Py_DECREF(orjson);
    if (Decimal == NULL || Fragment == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "Side", Py_NewRef((PyObject *)SideType)) < 0) {
        Py_DECREF(SideType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
