/* collector._fastbook: the book side and the one-change fast path in C.
 *
 * The same book as collector/book.py (the pure-Python reference, which the tests hold
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
 * `change()` is Stream._one_change (collector/stream.py) in C: the common update frame
 * (in sequence, its events all valid changes and trades) applied and its records
 * rendered, or None when the frame is anything else, with nothing touched (the Python
 * general path then validates and explains).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
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
static PyObject *k_events, *k_type, *k_seq, *k_event_id, *k_ts, *k_side, *k_price, *k_remaining,
    *k_maker, *k_tid, *k_amount, *k_updates, *k_trades;

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
    *len = PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_DATA(s);
}

/* parse_num on an ASCII str */
static int
parse_str(PyObject *s, Num *out)
{
    return parse_num((const char *)PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s), out);
}

/* Parse a str argument as a plain decimal, or set ValueError. */
static int
parse_arg(PyObject *s, const char *what, Num *out)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s must be str", what);
        return 0;
    }
    if (!PyUnicode_IS_ASCII(s) || !parse_str(s, out)) {
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

/* Order a level's price against `t` by value. */
static int
cmp_value(const Level *l, const Num *t)
{
    uint64_t a = l->key, b = t->key;
    if (a != b && ((a >> LEN_SHIFT) < LEN_FAR || (b >> LEN_SHIFT) < LEN_FAR))
        return a < b ? -1 : 1;
    if (a == b && !(a & 1))
        return 0;
    Num ln;
    parse_str(l->price, &ln);
    return cmp_digits(&ln, t);
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
        Py_INCREF(price);
        Py_INCREF(size);
        Py_SETREF(l->price, price);
        Py_SETREF(l->size, size);
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
            need += PyUnicode_GET_LENGTH(l->price) + PyUnicode_GET_LENGTH(l->size) + 8;
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
            memcpy(w, "[\"", 2);
            memcpy(w + 2, dp, (size_t)lp);
            w += 2 + lp;
            memcpy(w, "\",\"", 3);
            memcpy(w + 3, dq, (size_t)lq);
            w += 3 + lq;
            memcpy(w, "\"]", 2);
            w += 2;
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
    SideObject *s = (SideObject *)type->tp_alloc(type, 0);
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
    Py_TYPE(s)->tp_free((PyObject *)s);
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
    return PyObject_CallOneArg(Decimal, s->lv[s->n - 1].price);
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
        PyList_SET_ITEM(out, k, t);
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
        s->frag = PyObject_CallOneArg(Fragment, b);
        Py_DECREF(b);
        if (s->frag == NULL)
            return NULL;
    }
    return Py_NewRef(s->frag);
}

static PyMethodDef Side_methods[] = {
    {"set", (PyCFunction)(void (*)(void))Side_set, METH_FASTCALL,
     "set(price, size, depth): set a level (size zero removes it); True if the top "
     "`depth` changed."},
    {"best", (PyCFunction)Side_best, METH_NOARGS, "The best price as a Decimal, or None."},
    {"top", (PyCFunction)Side_top, METH_O, "top(depth): the best `depth` levels, best first."},
    {"top_json", (PyCFunction)Side_top_json, METH_O,
     "top_json(depth): top(depth) as JSON, an orjson.Fragment."},
    {NULL},
};

static PySequenceMethods Side_as_sequence = {.sq_length = (lenfunc)Side_len};

static PyTypeObject SideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "collector._fastbook.Side",
    .tp_basicsize = sizeof(SideObject),
    .tp_dealloc = (destructor)Side_dealloc,
    .tp_as_sequence = &Side_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One side of an exact full-depth book (collector.book.PySide in C).",
    .tp_methods = Side_methods,
    .tp_new = Side_new,
};

/* ---- the fast path ----------------------------------------------------------------------- */

#define MAX_EVENTS 16

/* d[key] if it is an exact int that fits in 64 bits, else 0 (no error set). */
static int
get_int(PyObject *d, PyObject *key, long long *v)
{
    PyObject *o = PyDict_GetItemWithError(d, key);
    if (o == NULL || !PyLong_CheckExact(o))
        return 0;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    return !overflow && !(*v == -1 && PyErr_Occurred());
}

/* d[key] if it is an exact str, else NULL (no error set). */
static PyObject *
get_str(PyObject *d, PyObject *key)
{
    PyObject *o = PyDict_GetItemWithError(d, key);
    return o != NULL && PyUnicode_CheckExact(o) ? o : NULL;
}

static int
is(PyObject *s, const char *want)
{
    return s != NULL && PyUnicode_CompareWithASCIIString(s, want) == 0;
}

/* A plain-decimal exact str at d[key], parsed; NULL if not. */
static PyObject *
get_num(PyObject *d, PyObject *key, Num *n)
{
    PyObject *o = get_str(d, key);
    return o != NULL && PyUnicode_IS_ASCII(o) && parse_str(o, n) ? o : NULL;
}

typedef struct {
    SideObject *side; /* NULL for a trade */
    PyObject *price, *size; /* a trade's price and amount */
    Num p, q;
    long long tid;
    PyObject *maker;
} Event;

/* One event of the common kinds (a change, or a trade that is not a block trade),
 * checked as collector.gemini.v1._event checks it; 0 for anything else. */
static int
get_event(PyObject *e, SideObject *bids, SideObject *asks, Event *ev)
{
    if (!PyDict_CheckExact(e))
        return 0;
    PyObject *type = get_str(e, k_type);
    if (is(type, "change")) {
        PyObject *side = get_str(e, k_side);
        ev->side = is(side, "bid") ? bids : is(side, "ask") ? asks : NULL;
        ev->price = get_num(e, k_price, &ev->p);
        ev->size = get_num(e, k_remaining, &ev->q);
        return ev->side != NULL && ev->price != NULL && ev->size != NULL
               && (ev->p.il != 0 || ev->p.fl != 0);
    }
    if (is(type, "trade")) {
        ev->side = NULL;
        ev->maker = get_str(e, k_maker);
        ev->price = get_num(e, k_price, &ev->p);
        ev->size = get_num(e, k_amount, &ev->q);
        return (is(ev->maker, "bid") || is(ev->maker, "ask") || is(ev->maker, "auction"))
               && get_int(e, k_tid, &ev->tid) && ev->price != NULL && ev->size != NULL;
    }
    return 0;
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
put(char *w, const char *s, Py_ssize_t len)
{
    memcpy(w, s, (size_t)len);
    return w + len;
}

#define PUT(w, lit) put((w), (lit), sizeof(lit) - 1)

static char *
put_str(char *w, PyObject *s)
{
    Py_ssize_t len;
    const char *d = ascii(s, &len);
    return put(w, d, len);
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

/* change(msg, expected, bids, asks, depth, emit_every, symbol, recv_ns, counts)
 *     -> bytes | False | None
 *
 * The common v1 frame: an update at socket_sequence `expected` whose events (1 to
 * MAX_EVENTS) are all changes and trades (not block trades), each valid; `symbol` is
 * the symbol as JSON. Applied as Stream._update applies it: the records are the
 * frame's trades in order, then its book record (when it had a change, and the top
 * changed or emit_every); counts.updates and counts.trades are added to.
 * None: any other frame; nothing was touched. False: applied, and the book is now
 * crossed (the caller raises). */
static PyObject *
change(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyDict_CheckExact(args[0]) || !PyObject_TypeCheck(args[2], &SideType)
        || !PyObject_TypeCheck(args[3], &SideType) || !PyBytes_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "change(msg: dict, expected: int, bids: Side, asks: Side, depth: int, "
                        "emit_every: bool, symbol: bytes, recv_ns: int, counts)");
        return NULL;
    }
    PyObject *msg = args[0], *symbol = args[6], *counts = args[8];
    SideObject *bids = (SideObject *)args[2], *asks = (SideObject *)args[3];
    long long expected = PyLong_AsLongLong(args[1]), recv_ns = PyLong_AsLongLong(args[7]);
    Py_ssize_t depth;
    int emit_every = PyObject_IsTrue(args[5]);
    if ((expected == -1 || recv_ns == -1 || emit_every < 0) && PyErr_Occurred())
        return NULL;
    if (!depth_arg(args[4], &depth))
        return NULL;

    long long seq, event_id, ts;
    PyObject *events = PyDict_GetItemWithError(msg, k_events);
    Py_ssize_t n;
    if (events == NULL || !PyList_CheckExact(events) || (n = PyList_GET_SIZE(events)) < 1
        || n > MAX_EVENTS || !get_int(msg, k_seq, &seq) || seq != expected
        || !get_int(msg, k_event_id, &event_id) || !get_int(msg, k_ts, &ts)
        || !is(get_str(msg, k_type), "update"))
        goto other;
    Event ev[MAX_EVENTS];
    Py_ssize_t trades = 0, size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!get_event(PyList_GET_ITEM(events, i), bids, asks, &ev[i]))
            goto other;
        if (ev[i].side == NULL) {
            trades++;
            size += PyUnicode_GET_LENGTH(ev[i].price) + PyUnicode_GET_LENGTH(ev[i].size) + 20;
        }
    }

    /* the frame is ours from here */
    int had_change = 0, top_changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ev[i].side == NULL)
            continue;
        had_change = 1;
        int r = side_set(ev[i].side, ev[i].price, &ev[i].p, ev[i].size, &ev[i].q, depth);
        if (r < 0)
            return NULL;
        top_changed |= r;
    }
    if ((had_change && add_count(counts, k_updates, 1) < 0)
        || (trades && add_count(counts, k_trades, trades) < 0))
        return NULL;
    if (top_changed && crossed(bids, asks))
        Py_RETURN_FALSE;
    int book = had_change && (top_changed || emit_every);
    if (!book && !trades)
        return PyBytes_FromStringAndSize(NULL, 0);

    Py_ssize_t lb = 0, la = 0, ls = PyBytes_GET_SIZE(symbol);
    const char *jb = NULL, *ja = NULL, *sym = PyBytes_AS_STRING(symbol);
    if (book) {
        jb = top_json(bids, depth, &lb);
        ja = top_json(asks, depth, &la);
        if (jb == NULL || ja == NULL)
            return NULL;
    }
    /* each record: keys and punctuation under 160 bytes, up to 6 ints of 20 */
    size += (trades + book) * (ls + 160 + 6 * 20) + lb + la;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    char *start = PyBytes_AS_STRING(out), *w = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ev[i].side != NULL)
            continue;
        w = put(PUT(w, "{\"type\":\"trade\",\"symbol\":"), sym, ls);
        w = put_int(PUT(w, ",\"seq\":"), seq);
        w = put_int(PUT(w, ",\"event_id\":"), event_id);
        w = put_int(PUT(w, ",\"tid\":"), ev[i].tid);
        w = put_str(PUT(w, ",\"price\":\""), ev[i].price);
        w = put_str(PUT(w, "\",\"amount\":\""), ev[i].size);
        w = put_str(PUT(w, "\",\"maker_side\":\""), ev[i].maker);
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
    if (_PyBytes_Resize(&out, w - start) < 0)
        return NULL;
    return out;

other:
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"change", (PyCFunction)(void (*)(void))change, METH_FASTCALL,
     "change(msg, expected, bids, asks, depth, emit_every, symbol, recv_ns, counts): "
     "the common v1 update frame, straight to the book and its records."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "collector._fastbook",
    .m_doc = "The book side and the one-change fast path in C (see collector/book.py).",
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
    if (PyType_Ready(&SideType) < 0)
        return NULL;
    if (!intern(&k_events, "events") || !intern(&k_type, "type")
        || !intern(&k_seq, "socket_sequence") || !intern(&k_event_id, "eventId")
        || !intern(&k_ts, "timestampms") || !intern(&k_side, "side")
        || !intern(&k_price, "price") || !intern(&k_remaining, "remaining")
        || !intern(&k_maker, "makerSide") || !intern(&k_tid, "tid") || !intern(&k_amount, "amount")
        || !intern(&k_updates, "updates") || !intern(&k_trades, "trades"))
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
    Py_INCREF(&SideType);
    if (PyModule_AddObject(m, "Side", (PyObject *)&SideType) < 0) {
        Py_DECREF(&SideType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
