/* cachewise._speedups: the cache-hit path of Cache.read in C (optional accelerator).
 *
 * HitReader(data, clock, touch, slow) is called as reader(key, default=None, *,
 * loader=None). On a live hit (the key is in ``data`` and its entry
 * ``(value, expires_at)`` has expires_at None or > clock()) it calls touch(key),
 * counts the hit and returns the value; anything else (absent, expired, a key that
 * is not a plain str/int/bytes or a tuple of them, an entry of another shape) returns
 * slow(key, default, loader), the same Python code the pure-Python path runs past its
 * hit, which refuses a bad key. The key's type is checked before the dict lookup:
 * 1.0, True or an IntEnum hash and compare equal to 1 and would find its entry. Why C: a Python frame, the
 * Python-level call of time.monotonic and an itertools.count hit counter are most of
 * a hit's cost in pure Python; here the hit is one vectorcall.
 *
 * Everything runs with the GIL held: the hit count is a plain integer and exact.
 * Only the public (limited-ish) C API of Python >= 3.10 is used.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

#if defined(__linux__)
#include <time.h>
#define CW_DIRECT_MONOTONIC 1 /* time.monotonic is clock_gettime(CLOCK_MONOTONIC) here */
#else
#define CW_DIRECT_MONOTONIC 0
#endif

typedef struct {
    PyObject_HEAD
    PyObject *data;  /* dict: key -> (value, expires_at or None) */
    PyObject *clock; /* () -> float, seconds */
    PyObject *touch; /* (key) -> None, may raise KeyError (a racing eviction) */
    PyObject *slow;  /* (key, default, loader) -> value: everything but a live hit */
    int direct_clock; /* clock is time.monotonic: read CLOCK_MONOTONIC ourselves */
    unsigned long long hits;
    vectorcallfunc vectorcall;
} HitReader;

static PyObject *time_monotonic = NULL; /* time.monotonic, to recognise it */

int cw_misspath_init(PyObject *module); /* _misspath.c: Flight, Inserter, MissPath */
int cw_wtinylfu_init(PyObject *module); /* _wtinylfu.c: WTinyLFU */
int cw_policies_init(PyObject *module); /* _policies.c: LRU, SIEVE, S3FIFO, ARC */
int cw_duel_init(PyObject *module);     /* _duel.c: Mini, DuelCore */

/* cachewise._types.MAX_DEPTH: a tuple key nested deeper goes to the slow path, which
 * refuses it (so a different value here would cost speed, never correctness). */
#define CW_MAX_KEY_DEPTH 32

/* 1 if ``key`` is exactly a str, int or bytes, or a tuple of such keys nested at most
 * CW_MAX_KEY_DEPTH deep; 0 otherwise (the slow path then says what is wrong). */
static int
plain_key(PyObject *key, int depth)
{
    if (PyUnicode_CheckExact(key) || PyLong_CheckExact(key) || PyBytes_CheckExact(key)) {
        return 1;
    }
    if (!PyTuple_CheckExact(key) || depth >= CW_MAX_KEY_DEPTH) {
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(key);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!plain_key(PyTuple_GET_ITEM(key, i), depth + 1)) {
            return 0;
        }
    }
    return 1;
}

#if CW_DIRECT_MONOTONIC
/* Seconds exactly as time.monotonic computes them: integer nanoseconds, then one
 * division (so an expires_at taken from time.monotonic compares consistently). */
static int
monotonic_now(double *now)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    long long ns = (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec;
    if (ns % 1000000000LL == 0) {
        *now = (double)(ns / 1000000000LL);
    }
    else {
        *now = (double)ns / 1e9;
    }
    return 0;
}
#endif

/* 1: the entry is live, 0: expired, -1: error. ``expires`` is not None. */
static int
is_live(HitReader *self, PyObject *expires)
{
#if CW_DIRECT_MONOTONIC
    if (self->direct_clock && PyFloat_CheckExact(expires)) {
        double now;
        if (monotonic_now(&now) < 0) {
            return -1;
        }
        return PyFloat_AS_DOUBLE(expires) > now;
    }
#endif
    PyObject *now = PyObject_CallNoArgs(self->clock);
    if (now == NULL) {
        return -1;
    }
    int live;
    if (PyFloat_CheckExact(now) && PyFloat_CheckExact(expires)) {
        live = PyFloat_AS_DOUBLE(expires) > PyFloat_AS_DOUBLE(now);
    }
    else {
        live = PyObject_RichCompareBool(expires, now, Py_GT);
    }
    Py_DECREF(now);
    return live;
}

static PyObject *
call_slow(HitReader *self, PyObject *key, PyObject *deflt, PyObject *loader)
{
    PyObject *args[3] = {key, deflt, loader};
    return PyObject_Vectorcall(self->slow, args, 3, NULL);
}

/* Split reader(key, default=None, *, loader=None) into its three arguments (borrowed). */
static int
parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **key,
           PyObject **deflt, PyObject **loader)
{
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "read() takes from 1 to 2 positional arguments but %zd were given", nargs);
        return -1;
    }
    *key = nargs >= 1 ? args[0] : NULL;
    *deflt = nargs == 2 ? args[1] : NULL;
    *loader = NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot;
        if (PyUnicode_CompareWithASCIIString(name, "key") == 0) {
            slot = key;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "default") == 0) {
            slot = deflt;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "loader") == 0) {
            slot = loader;
        }
        else {
            PyErr_Format(PyExc_TypeError, "read() got an unexpected keyword argument '%U'",
                         name);
            return -1;
        }
        if (*slot != NULL) {
            PyErr_Format(PyExc_TypeError, "read() got multiple values for argument '%U'", name);
            return -1;
        }
        *slot = args[nargs + i];
    }
    if (*key == NULL) {
        PyErr_SetString(PyExc_TypeError, "read() missing 1 required positional argument: 'key'");
        return -1;
    }
    if (*deflt == NULL) {
        *deflt = Py_None;
    }
    if (*loader == NULL) {
        *loader = Py_None;
    }
    return 0;
}

static PyObject *
HitReader_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                     PyObject *kwnames)
{
    HitReader *self = (HitReader *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *key, *deflt, *loader;
    if (nargs == 1 && kwnames == NULL) { /* the common call: read(key) */
        key = args[0];
        deflt = Py_None;
        loader = Py_None;
    }
    else if (parse_args(args, nargs, kwnames, &key, &deflt, &loader) < 0) {
        return NULL;
    }
    if (self->data == NULL) { /* only after tp_clear, while a cycle is collected */
        PyErr_SetString(PyExc_RuntimeError, "HitReader used after it was cleared");
        return NULL;
    }
    if (!PyUnicode_CheckExact(key) && !PyLong_CheckExact(key) && !PyBytes_CheckExact(key) &&
        !plain_key(key, 0)) {
        return call_slow(self, key, deflt, loader);
    }

    PyObject *entry = PyDict_GetItemWithError(self->data, key); /* borrowed */
    if (entry == NULL) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                return NULL;
            }
            PyErr_Clear(); /* unhashable: the slow path says why in our own words */
        }
        return call_slow(self, key, deflt, loader);
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2) {
        return call_slow(self, key, deflt, loader);
    }
    /* The clock, a comparison and touch may run Python code that drops the entry from
     * the dict: hold it (and so the value) until we are done. */
    Py_INCREF(entry);
    PyObject *expires = PyTuple_GET_ITEM(entry, 1);
    if (expires != Py_None) {
        int live = is_live(self, expires);
        if (live <= 0) {
            Py_DECREF(entry);
            return live < 0 ? NULL : call_slow(self, key, deflt, loader);
        }
    }
    PyObject *touched = PyObject_Vectorcall(self->touch, &key, 1, NULL);
    if (touched == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
            Py_DECREF(entry);
            return NULL;
        }
        PyErr_Clear(); /* evicted by another thread since the lookup: still a hit */
    }
    else {
        Py_DECREF(touched);
    }
    self->hits++;
    PyObject *value = PyTuple_GET_ITEM(entry, 0);
    Py_INCREF(value);
    Py_DECREF(entry);
    return value;
}

static PyObject *
HitReader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "clock", "touch", "slow", NULL};
    PyObject *data, *clock, *touch, *slow;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOO:HitReader", kwlist, &PyDict_Type,
                                     &data, &clock, &touch, &slow)) {
        return NULL;
    }
    if (!PyCallable_Check(clock) || !PyCallable_Check(touch) || !PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "HitReader: clock, touch and slow must be callable");
        return NULL;
    }
    HitReader *self = (HitReader *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(data);
    self->data = data;
    Py_INCREF(clock);
    self->clock = clock;
    Py_INCREF(touch);
    self->touch = touch;
    Py_INCREF(slow);
    self->slow = slow;
    self->direct_clock = CW_DIRECT_MONOTONIC && clock == time_monotonic;
    self->hits = 0;
    self->vectorcall = HitReader_vectorcall;
    return (PyObject *)self;
}

static int
HitReader_traverse(HitReader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->data);
    Py_VISIT(self->clock);
    Py_VISIT(self->touch);
    Py_VISIT(self->slow);
    return 0;
}

static int
HitReader_clear(HitReader *self)
{
    Py_CLEAR(self->data);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->touch);
    Py_CLEAR(self->slow);
    return 0;
}

static void
HitReader_dealloc(HitReader *self)
{
    PyObject_GC_UnTrack(self);
    HitReader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
HitReader_get_hits(HitReader *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->hits);
}

static PyObject *
HitReader_get_direct_clock(HitReader *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->direct_clock);
}

static PyGetSetDef HitReader_getset[] = {
    {"hits", (getter)HitReader_get_hits, NULL, "Live hits served (exact: counted under the GIL).",
     NULL},
    {"direct_clock", (getter)HitReader_get_direct_clock, NULL,
     "Whether the clock is time.monotonic read directly (no Python call).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(HitReader_doc,
             "HitReader(data, clock, touch, slow)\n--\n\n"
             "reader(key, default=None, *, loader=None): a live hit in ``data`` is touched,\n"
             "counted and returned; anything else returns slow(key, default, loader).");

static PyTypeObject HitReader_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.HitReader",
    .tp_basicsize = sizeof(HitReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = HitReader_doc,
    .tp_new = HitReader_new,
    .tp_dealloc = (destructor)HitReader_dealloc,
    .tp_traverse = (traverseproc)HitReader_traverse,
    .tp_clear = (inquiry)HitReader_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(HitReader, vectorcall),
    .tp_getset = HitReader_getset,
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cachewise._speedups",
    .m_doc = "The cache-hit path of Cache.read in C (optional; pure Python is the fallback).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (time_monotonic == NULL) {
        PyObject *time_module = PyImport_ImportModule("time");
        if (time_module == NULL) {
            return NULL;
        }
        time_monotonic = PyObject_GetAttrString(time_module, "monotonic");
        Py_DECREF(time_module);
        if (time_monotonic == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&HitReader_Type) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&HitReader_Type);
    if (PyModule_AddObject(module, "HitReader", (PyObject *)&HitReader_Type) < 0) {
        Py_DECREF(&HitReader_Type);
        Py_DECREF(module);
        return NULL;
    }
    if (cw_misspath_init(module) < 0 || cw_wtinylfu_init(module) < 0 ||
        cw_policies_init(module) < 0 || cw_duel_init(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
