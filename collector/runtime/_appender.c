/* collector.runtime._appender: the writer's appends on a thread that never takes the GIL.
 *
 * The writer (collector/runtime/writer.py) keeps its files off the event loop, so that a
 * slow disk never stalls the feeds. On a Python thread each batch cost two hand-overs of
 * the GIL: the thread waits to take it while the loop is busy (up to the 5 ms switch
 * interval), and every os.write gives it back and waits again. Here a batch of appends
 * (fd, bytes) is handed to a thread that writes it without Python at all and signals an
 * eventfd when done; the loop reads the results from its own callback.
 *
 * The thread is a Python thread running serve(), which lets go of the GIL at once and
 * takes it again only to return, after close(). Python starts and joins it: creating a
 * thread here would bind pthread_create of glibc 2.34, and the wheel's manylinux tag with it.
 *
 * One batch at a time: the writer awaits each before the next, which keeps every file's
 * lines in queue order. Each append is written whole or reports how far it got and the
 * errno that stopped it; the writer cuts a partial line back (SegmentFile.write's rule).
 * The thread touches only the bytes' buffers, kept alive by the references this object
 * holds until results() hands the batch back.
 */
#define PY_SSIZE_T_CLEAN
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000 /* the stable ABI of 3.11, as collector/core/_fastbook.c */
#endif
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

enum { IDLE, PENDING, RUNNING, DONE };

typedef struct {
    int fd;
    const char *buf;
    Py_ssize_t len, done;
    int err;
    int64_t t_ns; /* CLOCK_REALTIME once the append ended */
} Job;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready, serving, stopping, state, efd;
    Job *jobs;
    PyObject **keep; /* a reference to each job's bytes */
    Py_ssize_t n;
} Appender;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void append(Job *j)
{
    while (j->done < j->len) {
        ssize_t w = write(j->fd, j->buf + j->done, (size_t)(j->len - j->done));
        if (w > 0) {
            j->done += w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            j->err = w < 0 ? errno : EIO; /* 0 bytes for a non-empty write: never loop on it */
            break;
        }
    }
    j->t_ns = now_ns();
}

static void work(Appender *a)
{
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->state != PENDING && !a->stopping)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->state != PENDING)
            break; /* stopping, nothing in flight */
        a->state = RUNNING;
        Py_ssize_t n = a->n;
        Job *jobs = a->jobs;
        pthread_mutex_unlock(&a->mu);
        for (Py_ssize_t i = 0; i < n; i++)
            append(&jobs[i]);
        pthread_mutex_lock(&a->mu);
        a->state = DONE;
        uint64_t one = 1;
        while (write(a->efd, &one, sizeof one) < 0 && errno == EINTR) {
        }
    }
    pthread_mutex_unlock(&a->mu);
}

static void release(Appender *a)
{
    for (Py_ssize_t i = 0; i < a->n; i++)
        Py_XDECREF(a->keep[i]);
    PyMem_Free(a->keep);
    PyMem_Free(a->jobs);
    a->keep = NULL;
    a->jobs = NULL;
    a->n = 0;
    a->state = IDLE;
}

static int Appender_init(PyObject *self, PyObject *args, PyObject *kw)
{
    Appender *a = (Appender *)self;
    if (!PyArg_ParseTuple(args, ":Appender") || (kw && PyDict_Size(kw))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "Appender() takes no arguments");
        return -1;
    }
    if (a->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Appender already initialised");
        return -1;
    }
    a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->efd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->ready = 1;
    return 0;
}

/* serve(): append each batch submitted, without the GIL, until close(). */
static PyObject *Appender_serve(PyObject *self, PyObject *unused)
{
    Appender *a = (Appender *)self;
    if (!a->ready || a->stopping || a->serving) {
        PyErr_SetString(PyExc_RuntimeError, "the appender is closed or already served");
        return NULL;
    }
    a->serving = 1;
    Py_BEGIN_ALLOW_THREADS
    work(a);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Appender_fileno(PyObject *self, PyObject *unused)
{
    Appender *a = (Appender *)self;
    if (a->efd < 0) {
        PyErr_SetString(PyExc_ValueError, "the appender is closed");
        return NULL;
    }
    return PyLong_FromLong(a->efd);
}

/* submit([(fd, bytes), ...]): start appending; RuntimeError while a batch is in flight. */
static PyObject *Appender_submit(PyObject *self, PyObject *batch)
{
    Appender *a = (Appender *)self;
    if (!a->ready || a->stopping) {
        PyErr_SetString(PyExc_ValueError, "the appender is closed");
        return NULL;
    }
    pthread_mutex_lock(&a->mu);
    int state = a->state;
    pthread_mutex_unlock(&a->mu);
    if (state != IDLE) {
        PyErr_SetString(PyExc_RuntimeError, "a batch is in flight");
        return NULL;
    }
    PyObject *seq = PySequence_Tuple(batch);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_Size(seq);
    Job *jobs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Job));
    PyObject **keep = PyMem_Calloc(n ? (size_t)n : 1, sizeof(PyObject *));
    if (jobs == NULL || keep == NULL) {
        PyMem_Free(jobs);
        PyMem_Free(keep);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GetItem(seq, i);
        int fd;
        PyObject *data;
        char *buf;
        Py_ssize_t len;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "iS:submit", &fd, &data)
            || PyBytes_AsStringAndSize(data, &buf, &len) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "submit() takes (fd, bytes) tuples");
            for (Py_ssize_t k = 0; k < i; k++)
                Py_DECREF(keep[k]);
            PyMem_Free(jobs);
            PyMem_Free(keep);
            Py_DECREF(seq);
            return NULL;
        }
        Py_INCREF(data);
        keep[i] = data;
        jobs[i].fd = fd;
        jobs[i].buf = buf;
        jobs[i].len = len;
    }
    Py_DECREF(seq);
    pthread_mutex_lock(&a->mu);
    a->jobs = jobs;
    a->keep = keep;
    a->n = n;
    a->state = PENDING;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    Py_RETURN_NONE;
}

/* results(): the batch's [(bytes written, errno or 0, time_ns), ...] once done, else None. */
static PyObject *Appender_results(PyObject *self, PyObject *unused)
{
    Appender *a = (Appender *)self;
    uint64_t count;
    if (a->efd >= 0)
        while (read(a->efd, &count, sizeof count) < 0 && errno == EINTR) {
        }
    pthread_mutex_lock(&a->mu);
    int state = a->state;
    pthread_mutex_unlock(&a->mu);
    if (state != DONE)
        Py_RETURN_NONE;
    PyObject *out = PyList_New(a->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < a->n; i++) {
        Job *j = &a->jobs[i];
        PyObject *t = Py_BuildValue("(niL)", j->done, j->err, (long long)j->t_ns);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SetItem(out, i, t);
    }
    release(a);
    return out;
}

/* close(): no more batches; serve() returns once the one in flight is written. */
static PyObject *Appender_close(PyObject *self, PyObject *unused)
{
    Appender *a = (Appender *)self;
    if (a->ready) {
        pthread_mutex_lock(&a->mu);
        a->stopping = 1;
        pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
    }
    Py_RETURN_NONE;
}

/* Gone: serve() has returned (its thread held a reference), so nothing writes. */
static void Appender_dealloc(PyObject *self)
{
    Appender *a = (Appender *)self;
    if (a->ready) {
        release(a);
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        close(a->efd);
    }
    PyTypeObject *tp = Py_TYPE(self);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

static PyObject *Appender_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    Appender *a = (Appender *)alloc(type, 0);
    if (a != NULL)
        a->efd = -1;
    return (PyObject *)a;
}

static PyMethodDef Appender_methods[] = {
    {"fileno", Appender_fileno, METH_NOARGS, "The eventfd that turns readable when a batch is done."},
    {"submit", Appender_submit, METH_O, "Append [(fd, bytes), ...] on the thread, in order."},
    {"results", Appender_results, METH_NOARGS,
     "[(written, errno, time_ns), ...] of the finished batch, or None while it runs."},
    {"serve", Appender_serve, METH_NOARGS, "Append the batches submitted, without the GIL, until close()."},
    {"close", Appender_close, METH_NOARGS, "No more batches: serve() returns after the one in flight."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Appender_slots[] = {
    {Py_tp_new, Appender_new},
    {Py_tp_init, Appender_init},
    {Py_tp_dealloc, Appender_dealloc},
    {Py_tp_methods, Appender_methods},
    {Py_tp_doc, "Appends batches of (fd, bytes) on the thread that runs serve(), without the GIL."},
    {0, NULL},
};

static PyType_Spec Appender_spec = {
    "collector.runtime._appender.Appender", sizeof(Appender), 0, Py_TPFLAGS_DEFAULT, Appender_slots,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_appender", "The writer's appends, off the GIL.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__appender(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *type = PyType_FromSpec(&Appender_spec);
    if (type == NULL || PyModule_AddObject(m, "Appender", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
