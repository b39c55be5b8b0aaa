/* cachewise._speedups, part five: the default policy's per-request work in C.
 *
 * Mini(policy, capacity): a key-only miniature cache of one candidate policy, scored
 * by its misses (stores/eviction.py's _Shadow without the eviction log).
 * DuelCore(real, minis, period, drop, elect): stores/eviction.py's _DuelCore, the part
 * of SampledAdaptive that runs on every request: the real policy's hits, inserts and
 * evictions, and the hashed sample of keys (those whose (hash * golden) >> drop is
 * zero) fed to every miniature; elect() (Python: compare the scores, maybe switch the
 * real policy) runs every ``period`` sampled requests. A hit only enters a ring of
 * HIT_BUFFER keys (the oldest dropped when full, as Python's deque(maxlen=...)); the
 * hits are replayed, in order, at the next insert, remove or evict, which the store
 * runs under its lock: so the lock-free hit costs what a deque.append does.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#define GOLDEN 0x9E3779B97F4A7C15ULL
#define HIT_BUFFER 16384 /* stores/eviction.py's DUEL_HIT_BUFFER */

static PyObject *d_access = NULL, *d_remove = NULL;
static PyObject *d_on_hit = NULL, *d_on_insert = NULL, *d_on_remove = NULL, *d_evict = NULL;

static int
call1(PyObject *fn, PyObject *arg)
{
    PyObject *r = PyObject_CallOneArg(fn, arg);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
is_sampled(PyObject *key, int drop, int *out)
{
    if (drop >= 64) {
        *out = 1;
        return 0;
    }
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1) {
        return -1;
    }
    *out = (((uint64_t)hash * GOLDEN) >> drop) == 0;
    return 0;
}

/* ==================================================================== Mini */

typedef struct {
    PyObject_HEAD
    PyObject *policy;
    PyObject *on_hit, *on_insert, *on_remove, *evict; /* the policy's, bound */
    PyObject *resident;                             /* set */
    Py_ssize_t capacity;
    double misses;
} Mini;

static PyTypeObject Mini_Type;

static int
mini_access(Mini *self, PyObject *key)
{
    int in = PySet_Contains(self->resident, key);
    if (in < 0) {
        return -1;
    }
    if (in) {
        return call1(self->on_hit, key);
    }
    self->misses += 1.0;
    if (PySet_Add(self->resident, key) < 0 || call1(self->on_insert, key) < 0) {
        return -1;
    }
    if (PySet_GET_SIZE(self->resident) > self->capacity) {
        PyObject *victim = PyObject_CallNoArgs(self->evict);
        if (victim == NULL) {
            return -1;
        }
        int rc = PySet_Discard(self->resident, victim);
        Py_DECREF(victim);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

static int
mini_remove(Mini *self, PyObject *key)
{
    int gone = PySet_Discard(self->resident, key);
    if (gone <= 0) {
        return gone;
    }
    return call1(self->on_remove, key);
}

static PyObject *
Mini_access(Mini *self, PyObject *key)
{
    return mini_access(self, key) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
Mini_remove(Mini *self, PyObject *key)
{
    return mini_remove(self, key) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
Mini_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"policy", "capacity", NULL};
    PyObject *policy;
    Py_ssize_t capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On:Mini", kwlist, &policy, &capacity)) {
        return NULL;
    }
    if (capacity < 1) {
        PyErr_SetString(PyExc_ValueError, "Mini: capacity must be >= 1");
        return NULL;
    }
    Mini *self = (Mini *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->policy = Py_NewRef(policy);
    self->on_hit = PyObject_GetAttr(policy, d_on_hit);
    self->on_insert = self->on_hit ? PyObject_GetAttr(policy, d_on_insert) : NULL;
    self->on_remove = self->on_insert ? PyObject_GetAttr(policy, d_on_remove) : NULL;
    self->evict = self->on_remove ? PyObject_GetAttr(policy, d_evict) : NULL;
    self->resident = self->evict ? PySet_New(NULL) : NULL;
    if (self->resident == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->capacity = capacity;
    return (PyObject *)self;
}

static int
Mini_traverse(Mini *self, visitproc visit, void *arg)
{
    Py_VISIT(self->policy);
    Py_VISIT(self->on_hit);
    Py_VISIT(self->on_insert);
    Py_VISIT(self->on_remove);
    Py_VISIT(self->evict);
    Py_VISIT(self->resident);
    return 0;
}

static int
Mini_clear(Mini *self)
{
    Py_CLEAR(self->policy);
    Py_CLEAR(self->on_hit);
    Py_CLEAR(self->on_insert);
    Py_CLEAR(self->on_remove);
    Py_CLEAR(self->evict);
    Py_CLEAR(self->resident);
    return 0;
}

static void
Mini_dealloc(Mini *self)
{
    PyObject_GC_UnTrack(self);
    Mini_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Mini_get_misses(Mini *self, void *closure)
{
    (void)closure;
    return PyFloat_FromDouble(self->misses);
}

static int
Mini_set_misses(Mini *self, PyObject *value, void *closure)
{
    (void)closure;
    double misses = value == NULL ? -1.0 : PyFloat_AsDouble(value);
    if (misses == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (misses < 0.0) {
        PyErr_SetString(PyExc_ValueError, "Mini.misses must be >= 0");
        return -1;
    }
    self->misses = misses;
    return 0;
}

static PyObject *
Mini_get_capacity(Mini *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->capacity);
}

static PyObject *
Mini_get_policy(Mini *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->policy);
}

static PyMethodDef Mini_methods[] = {
    {"access", (PyCFunction)Mini_access, METH_O, "One request for the key."},
    {"remove", (PyCFunction)Mini_remove, METH_O, "The key left the real cache."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Mini_getset[] = {
    {"misses", (getter)Mini_get_misses, (setter)Mini_set_misses, "The (decayed) miss count.",
     NULL},
    {"capacity", (getter)Mini_get_capacity, NULL, "Entries of the miniature.", NULL},
    {"policy", (getter)Mini_get_policy, NULL, "The candidate policy.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Mini_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.Mini",
    .tp_basicsize = sizeof(Mini),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Mini(policy, capacity): a key-only miniature cache scored by its misses.",
    .tp_new = Mini_new,
    .tp_dealloc = (destructor)Mini_dealloc,
    .tp_traverse = (traverseproc)Mini_traverse,
    .tp_clear = (inquiry)Mini_clear,
    .tp_methods = Mini_methods,
    .tp_getset = Mini_getset,
};

/* ================================================================ DuelCore */

typedef struct {
    PyObject_HEAD
    PyObject *real, *real_hit, *real_insert, *real_remove, *real_evict;
    PyObject *minis;    /* list of Mini (or objects with access/remove) */
    PyObject *elect;    /* () -> None, every ``period`` sampled requests */
    PyObject *ring[HIT_BUFFER];
    Py_ssize_t head, count, requests, period;
    int drop;
    vectorcallfunc vectorcall; /* calling the core is the hit */
} DuelCore;

static int
core_bind(DuelCore *self, PyObject *real)
{
    PyObject *hit = PyObject_GetAttr(real, d_on_hit);
    PyObject *insert = hit ? PyObject_GetAttr(real, d_on_insert) : NULL;
    PyObject *remove = insert ? PyObject_GetAttr(real, d_on_remove) : NULL;
    PyObject *evict = remove ? PyObject_GetAttr(real, d_evict) : NULL;
    if (evict == NULL) {
        Py_XDECREF(hit);
        Py_XDECREF(insert);
        Py_XDECREF(remove);
        return -1;
    }
    Py_XSETREF(self->real, Py_NewRef(real));
    Py_XSETREF(self->real_hit, hit);
    Py_XSETREF(self->real_insert, insert);
    Py_XSETREF(self->real_remove, remove);
    Py_XSETREF(self->real_evict, evict);
    return 0;
}

/* One sampled request: every miniature sees it; elect every ``period``. */
static int
core_sample(DuelCore *self, PyObject *key)
{
    Py_ssize_t n = PyList_GET_SIZE(self->minis);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *mini = PyList_GET_ITEM(self->minis, i);
        int rc;
        if (Py_IS_TYPE(mini, &Mini_Type)) {
            Py_INCREF(mini);
            rc = mini_access((Mini *)mini, key);
            Py_DECREF(mini);
        }
        else {
            PyObject *r = PyObject_CallMethodOneArg(mini, d_access, key);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        if (rc < 0) {
            return -1;
        }
    }
    if (++self->requests >= self->period) {
        self->requests = 0;
        PyObject *r = PyObject_CallNoArgs(self->elect);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

/* Replay the buffered hits, in order: the real policy's hit (a key evicted since a
 * racing lock-free hit is skipped), then the miniatures for a sampled key. */
static int
core_drain(DuelCore *self)
{
    while (self->count > 0) {
        PyObject *key = self->ring[self->head]; /* owned */
        self->ring[self->head] = NULL;
        self->head = (self->head + 1) % HIT_BUFFER;
        self->count--;
        PyObject *hit = Py_NewRef(self->real_hit);
        int rc = call1(hit, key);
        Py_DECREF(hit);
        if (rc < 0 && PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
            rc = 0;
        }
        int sampled = 0;
        if (rc == 0) {
            rc = is_sampled(key, self->drop, &sampled);
        }
        if (rc == 0 && sampled) {
            rc = core_sample(self, key);
        }
        Py_DECREF(key);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
DuelCore_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                    PyObject *kwnames)
{
    DuelCore *self = (DuelCore *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a DuelCore hit takes one key");
        return NULL;
    }
    if (self->count == HIT_BUFFER) { /* full: drop the oldest, as deque(maxlen) */
        Py_CLEAR(self->ring[self->head]);
        self->head = (self->head + 1) % HIT_BUFFER;
        self->count--;
    }
    self->ring[(self->head + self->count) % HIT_BUFFER] = Py_NewRef(args[0]);
    self->count++;
    Py_RETURN_NONE;
}

static PyObject *
DuelCore_insert(DuelCore *self, PyObject *key)
{
    int sampled;
    if (core_drain(self) < 0 || call1(self->real_insert, key) < 0 ||
        is_sampled(key, self->drop, &sampled) < 0 ||
        (sampled && core_sample(self, key) < 0)) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
DuelCore_remove(DuelCore *self, PyObject *key)
{
    int sampled;
    if (core_drain(self) < 0 || call1(self->real_remove, key) < 0 ||
        is_sampled(key, self->drop, &sampled) < 0) {
        return NULL;
    }
    if (sampled) {
        Py_ssize_t n = PyList_GET_SIZE(self->minis);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *r = PyObject_CallMethodOneArg(PyList_GET_ITEM(self->minis, i), d_remove,
                                                    key);
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
DuelCore_evict(DuelCore *self, PyObject *unused)
{
    (void)unused;
    if (core_drain(self) < 0) {
        return NULL;
    }
    return PyObject_CallNoArgs(self->real_evict);
}

static void
ring_clear(DuelCore *self)
{
    while (self->count > 0) {
        Py_CLEAR(self->ring[self->head]);
        self->head = (self->head + 1) % HIT_BUFFER;
        self->count--;
    }
    self->head = 0;
}

static PyObject *
DuelCore_clear_core(DuelCore *self, PyObject *unused)
{
    (void)unused;
    ring_clear(self);
    self->requests = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t
DuelCore_len(DuelCore *self)
{
    return self->real == NULL ? 0 : PyObject_Length(self->real);
}

static PyObject *
DuelCore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"real", "minis", "period", "drop", "elect", NULL};
    PyObject *real, *minis, *elect;
    Py_ssize_t period;
    int drop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!niO:DuelCore", kwlist, &real, &PyList_Type,
                                     &minis, &period, &drop, &elect)) {
        return NULL;
    }
    if (period < 1 || drop < 1 || drop > 64 || !PyCallable_Check(elect)) {
        PyErr_SetString(PyExc_ValueError,
                        "DuelCore: period >= 1, 1 <= drop <= 64, elect callable");
        return NULL;
    }
    DuelCore *self = (DuelCore *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->minis = Py_NewRef(minis);
    self->elect = Py_NewRef(elect);
    self->period = period;
    self->drop = drop;
    self->vectorcall = DuelCore_vectorcall;
    if (core_bind(self, real) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
DuelCore_traverse(DuelCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->real);
    Py_VISIT(self->real_hit);
    Py_VISIT(self->real_insert);
    Py_VISIT(self->real_remove);
    Py_VISIT(self->real_evict);
    Py_VISIT(self->minis);
    Py_VISIT(self->elect);
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Py_VISIT(self->ring[(self->head + i) % HIT_BUFFER]);
    }
    return 0;
}

static int
DuelCore_clear(DuelCore *self)
{
    ring_clear(self);
    Py_CLEAR(self->real);
    Py_CLEAR(self->real_hit);
    Py_CLEAR(self->real_insert);
    Py_CLEAR(self->real_remove);
    Py_CLEAR(self->real_evict);
    Py_CLEAR(self->minis);
    Py_CLEAR(self->elect);
    return 0;
}

static void
DuelCore_dealloc(DuelCore *self)
{
    PyObject_GC_UnTrack(self);
    DuelCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
DuelCore_get_real(DuelCore *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->real ? self->real : Py_None);
}

static int
DuelCore_set_real(DuelCore *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "DuelCore.real cannot be deleted");
        return -1;
    }
    return core_bind(self, value);
}

static PyMethodDef DuelCore_methods[] = {
    {"insert", (PyCFunction)DuelCore_insert, METH_O, "A new resident key."},
    {"remove", (PyCFunction)DuelCore_remove, METH_O, "A key removed by delete or expiry."},
    {"evict", (PyCFunction)DuelCore_evict, METH_NOARGS, "The real policy's victim."},
    {"clear", (PyCFunction)DuelCore_clear_core, METH_NOARGS,
     "Forget the buffered hits (not the real policy)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef DuelCore_getset[] = {
    {"real", (getter)DuelCore_get_real, (setter)DuelCore_set_real,
     "The policy the cache runs now.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods DuelCore_as_sequence = {.sq_length = (lenfunc)DuelCore_len};

static PyTypeObject DuelCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.DuelCore",
    .tp_basicsize = sizeof(DuelCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "DuelCore(real, minis, period, drop, elect)\n--\n\n"
              "The per-request part of SampledAdaptive; core(key) is a hit.",
    .tp_new = DuelCore_new,
    .tp_dealloc = (destructor)DuelCore_dealloc,
    .tp_traverse = (traverseproc)DuelCore_traverse,
    .tp_clear = (inquiry)DuelCore_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(DuelCore, vectorcall),
    .tp_methods = DuelCore_methods,
    .tp_getset = DuelCore_getset,
    .tp_as_sequence = &DuelCore_as_sequence,
};

int
cw_duel_init(PyObject *module)
{
    if (d_access == NULL) {
        d_access = PyUnicode_InternFromString("access");
        d_remove = PyUnicode_InternFromString("remove");
        d_on_hit = PyUnicode_InternFromString("on_hit");
        d_on_insert = PyUnicode_InternFromString("on_insert");
        d_on_remove = PyUnicode_InternFromString("on_remove");
        d_evict = PyUnicode_InternFromString("evict");
        if (!d_access || !d_remove || !d_on_hit || !d_on_insert ||
            !d_on_remove || !d_evict) {
            return -1;
        }
    }
    PyTypeObject *types[] = {&Mini_Type, &DuelCore_Type};
    const char *names[] = {"Mini", "DuelCore"};
    for (size_t i = 0; i < 2; i++) {
        if (PyType_Ready(types[i]) < 0) {
            return -1;
        }
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            return -1;
        }
    }
    return 0;
}
