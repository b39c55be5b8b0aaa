/* cachewise._speedups, part two: the miss path of Cache.read in C.
 *
 * Three types, added to the module by cw_misspath_init():
 *
 * Flight: one in-flight load of a key (the C twin of cache.py's _Load). No lock is
 *   allocated unless a second thread waits: the first waiter creates one, takes it,
 *   and blocks taking it again until the leader's publish() releases it; each waiter
 *   then releases it for the next. Most misses have no waiter.
 * Inserter(data, lock, on_insert, on_hit, evict, max_entries, listeners): a
 *   MemoryStore's insert: under the store's lock, store the entry, tell the policy,
 *   evict while over the bound; listeners hear of evictions after the lock is released.
 * MissPath(data, inserter, inflight, stripes, source_load, clock, ttl, slow, missing):
 *   the part of Cache.read past the hit, for a plain MemoryStore with no write-back: a
 *   str/int/bytes key that is absent is counted, loaded once however many threads miss
 *   it (single flight through the cache's in-flight dict), and stored unless a write
 *   superseded the load while it ran (checked under the key's stripe lock, as the
 *   writers hold it). Anything else (other keys, expired entries, waiting for another
 *   thread's load is not) goes to slow(key, default, loader), the Python path.
 *
 * Why C: in Python, the frames, the _Load and its lock, the store's set and the
 * counters cost several microseconds per miss, more than a whole cachetools miss.
 * Everything runs with the GIL held; counters are plain integers and exact. The keys
 * served here hash and compare in C, so the in-flight registration (dict.setdefault)
 * is atomic, as the Python path's is.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyObject *allocate_lock = NULL; /* _thread.allocate_lock */
static PyObject *str_acquire = NULL;
static PyObject *str_release = NULL;
static PyObject *str_wait = NULL;

/* ------------------------------------------------------------------ Flight */

typedef struct {
    PyObject_HEAD
    PyObject *value; /* the outcome (MISSING until set) */
    PyObject *error; /* the leader's exception, or None */
    PyObject *lock;  /* created by the first waiter, else NULL */
    char superseded; /* a write finished while the load ran: do not store */
    char done;
} Flight;

static PyTypeObject Flight_Type;

static Flight *
flight_create(PyObject *missing)
{
    Flight *self = PyObject_GC_New(Flight, &Flight_Type);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(missing);
    self->value = missing;
    Py_INCREF(Py_None);
    self->error = Py_None;
    self->lock = NULL;
    self->superseded = 0;
    self->done = 0;
    PyObject_GC_Track(self);
    return self;
}

static PyObject *
Flight_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"missing", NULL};
    PyObject *missing = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:Flight", kwlist, &missing)) {
        return NULL;
    }
    (void)type;
    return (PyObject *)flight_create(missing);
}

/* Release the waiters (the outcome is in value / error). */
static int
flight_publish(Flight *self)
{
    self->done = 1;
    if (self->lock != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(self->lock, str_release);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
Flight_publish(Flight *self, PyObject *unused)
{
    (void)unused;
    if (self->done) {
        PyErr_SetString(PyExc_RuntimeError, "Flight published twice");
        return NULL;
    }
    if (flight_publish(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Block until the leader publishes; return its value or raise its error. */
static PyObject *
Flight_wait(Flight *self, PyObject *unused)
{
    (void)unused;
    if (!self->done) {
        if (self->lock == NULL) {
            PyObject *lock = PyObject_CallNoArgs(allocate_lock);
            if (lock == NULL) {
                return NULL;
            }
            PyObject *r = PyObject_CallMethodNoArgs(lock, str_acquire); /* free: at once */
            if (r == NULL) {
                Py_DECREF(lock);
                return NULL;
            }
            Py_DECREF(r);
            self->lock = lock;
        }
        PyObject *lock = self->lock;
        Py_INCREF(lock);
        PyObject *r = PyObject_CallMethodNoArgs(lock, str_acquire); /* until publish */
        if (r == NULL) {
            Py_DECREF(lock);
            return NULL;
        }
        Py_DECREF(r);
        r = PyObject_CallMethodNoArgs(lock, str_release); /* the next waiter's turn */
        Py_DECREF(lock);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    if (self->error != Py_None) {
        PyObject *error = self->error;
        Py_INCREF(error);
        PyObject *type = (PyObject *)Py_TYPE(error);
        Py_INCREF(type);
        PyErr_Restore(type, error, PyException_GetTraceback(error));
        return NULL;
    }
    Py_INCREF(self->value);
    return self->value;
}

static int
Flight_traverse(Flight *self, visitproc visit, void *arg)
{
    Py_VISIT(self->value);
    Py_VISIT(self->error);
    Py_VISIT(self->lock);
    return 0;
}

static int
Flight_clear(Flight *self)
{
    Py_CLEAR(self->value);
    Py_CLEAR(self->error);
    Py_CLEAR(self->lock);
    return 0;
}

static void
Flight_dealloc(Flight *self)
{
    PyObject_GC_UnTrack(self);
    Flight_clear(self);
    PyObject_GC_Del(self);
}

static PyMethodDef Flight_methods[] = {
    {"wait", (PyCFunction)Flight_wait, METH_NOARGS,
     "Block until the leader publishes; return its value or raise its error."},
    {"publish", (PyCFunction)Flight_publish, METH_NOARGS,
     "Release the waiters (the outcome is in value / error)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Flight_members[] = {
    {"value", T_OBJECT_EX, offsetof(Flight, value), 0, "The loaded value (MISSING: none)."},
    {"error", T_OBJECT_EX, offsetof(Flight, error), 0, "The leader's exception, or None."},
    {"superseded", T_BOOL, offsetof(Flight, superseded), 0,
     "A write finished while the load ran: its value is not stored."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject Flight_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.Flight",
    .tp_basicsize = sizeof(Flight),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Flight(missing=None): one in-flight load of a key; waiters block in wait().",
    .tp_new = Flight_new,
    .tp_dealloc = (destructor)Flight_dealloc,
    .tp_traverse = (traverseproc)Flight_traverse,
    .tp_clear = (inquiry)Flight_clear,
    .tp_methods = Flight_methods,
    .tp_members = Flight_members,
};

/* ---------------------------------------------------------------- Inserter */

typedef struct {
    PyObject_HEAD
    PyObject *data;      /* dict: key -> (value, expires_at) */
    PyObject *acquire;   /* the store lock's bound acquire / release */
    PyObject *release;
    PyObject *on_insert; /* the policy's */
    PyObject *on_hit;
    PyObject *evict;
    PyObject *listeners; /* list of callables (keys) -> None */
    Py_ssize_t max_entries;
    unsigned long long evictions;
    vectorcallfunc vectorcall;
} Inserter;

static PyTypeObject Inserter_Type;

static int
call_noargs_ok(PyObject *fn)
{
    PyObject *r = PyObject_CallNoArgs(fn);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
call_one_ok(PyObject *fn, PyObject *arg)
{
    PyObject *r = PyObject_CallOneArg(fn, arg);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Under the lock: store the entry, tell the policy, evict while over the bound.
 * *evicted gets a new list of the victims (or stays NULL). */
static int
inserter_put_locked(Inserter *self, PyObject *key, PyObject *entry, PyObject **evicted)
{
    Py_ssize_t before = PyDict_GET_SIZE(self->data);
    if (PyDict_SetItem(self->data, key, entry) < 0) {
        return -1;
    }
    if (PyDict_GET_SIZE(self->data) == before) { /* it was there: a rewrite */
        return call_one_ok(self->on_hit, key);
    }
    if (call_one_ok(self->on_insert, key) < 0) {
        return -1;
    }
    while (PyDict_GET_SIZE(self->data) > self->max_entries) {
        PyObject *victim = PyObject_CallNoArgs(self->evict);
        if (victim == NULL) {
            return -1;
        }
        if (PyDict_DelItem(self->data, victim) < 0) {
            Py_DECREF(victim);
            return -1;
        }
        self->evictions++;
        if (PyList_GET_SIZE(self->listeners) == 0) { /* nobody to tell: no list */
            Py_DECREF(victim);
            continue;
        }
        if (*evicted == NULL && (*evicted = PyList_New(0)) == NULL) {
            Py_DECREF(victim);
            return -1;
        }
        int appended = PyList_Append(*evicted, victim);
        Py_DECREF(victim);
        if (appended < 0) {
            return -1;
        }
    }
    return 0;
}

/* The whole insert: lock, put, unlock, then tell the listeners. */
static int
inserter_put(Inserter *self, PyObject *key, PyObject *entry)
{
    PyObject *evicted = NULL;
    if (call_noargs_ok(self->acquire) < 0) {
        return -1;
    }
    int rc = inserter_put_locked(self, key, entry, &evicted);
    if (rc < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        int released = call_noargs_ok(self->release);
        if (released < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        else {
            PyErr_Restore(type, value, tb);
        }
        Py_XDECREF(evicted);
        return -1;
    }
    if (call_noargs_ok(self->release) < 0) {
        Py_XDECREF(evicted);
        return -1;
    }
    if (evicted != NULL) {
        Py_ssize_t n = PyList_GET_SIZE(self->listeners);
        for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
            PyObject *listener = PyList_GET_ITEM(self->listeners, i);
            Py_INCREF(listener);
            rc = call_one_ok(listener, evicted);
            Py_DECREF(listener);
        }
        Py_DECREF(evicted);
    }
    return rc;
}

static PyObject *
Inserter_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Inserter takes (key, entry)");
        return NULL;
    }
    if (inserter_put((Inserter *)callable, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Inserter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data",  "lock",        "on_insert", "on_hit",
                             "evict", "max_entries", "listeners", NULL};
    PyObject *data, *lock, *on_insert, *on_hit, *evict, *listeners;
    Py_ssize_t max_entries;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOOnO!:Inserter", kwlist, &PyDict_Type,
                                     &data, &lock, &on_insert, &on_hit, &evict, &max_entries,
                                     &PyList_Type, &listeners)) {
        return NULL;
    }
    if (!PyCallable_Check(on_insert) || !PyCallable_Check(on_hit) || !PyCallable_Check(evict)) {
        PyErr_SetString(PyExc_TypeError, "Inserter: on_insert, on_hit and evict must be callable");
        return NULL;
    }
    if (max_entries < 1) {
        PyErr_SetString(PyExc_ValueError, "Inserter: max_entries must be >= 1");
        return NULL;
    }
    PyObject *acquire = PyObject_GetAttr(lock, str_acquire);
    if (acquire == NULL) {
        return NULL;
    }
    PyObject *release = PyObject_GetAttr(lock, str_release);
    if (release == NULL) {
        Py_DECREF(acquire);
        return NULL;
    }
    Inserter *self = (Inserter *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(acquire);
        Py_DECREF(release);
        return NULL;
    }
    Py_INCREF(data);
    self->data = data;
    self->acquire = acquire;
    self->release = release;
    Py_INCREF(on_insert);
    self->on_insert = on_insert;
    Py_INCREF(on_hit);
    self->on_hit = on_hit;
    Py_INCREF(evict);
    self->evict = evict;
    Py_INCREF(listeners);
    self->listeners = listeners;
    self->max_entries = max_entries;
    self->evictions = 0;
    self->vectorcall = Inserter_vectorcall;
    return (PyObject *)self;
}

static int
Inserter_traverse(Inserter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->data);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->on_insert);
    Py_VISIT(self->on_hit);
    Py_VISIT(self->evict);
    Py_VISIT(self->listeners);
    return 0;
}

static int
Inserter_clear(Inserter *self)
{
    Py_CLEAR(self->data);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->on_insert);
    Py_CLEAR(self->on_hit);
    Py_CLEAR(self->evict);
    Py_CLEAR(self->listeners);
    return 0;
}

static void
Inserter_dealloc(Inserter *self)
{
    PyObject_GC_UnTrack(self);
    Inserter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Inserter_get_evictions(Inserter *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->evictions);
}

static PyGetSetDef Inserter_getset[] = {
    {"evictions", (getter)Inserter_get_evictions, NULL, "Entries evicted by this inserter.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Inserter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.Inserter",
    .tp_basicsize = sizeof(Inserter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Inserter(data, lock, on_insert, on_hit, evict, max_entries, listeners)\n--\n\n"
              "inserter(key, entry): a MemoryStore's insert under its lock, evicting by\n"
              "policy while over max_entries; listeners hear of evictions afterwards.",
    .tp_new = Inserter_new,
    .tp_dealloc = (destructor)Inserter_dealloc,
    .tp_traverse = (traverseproc)Inserter_traverse,
    .tp_clear = (inquiry)Inserter_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Inserter, vectorcall),
    .tp_getset = Inserter_getset,
};

/* ---------------------------------------------------------------- MissPath */

typedef struct {
    PyObject_HEAD
    PyObject *data;        /* the store's dict */
    PyObject *inserter;    /* the store's Inserter */
    PyObject *inflight;    /* the cache's dict: key -> Flight or _Load */
    PyObject *stripes;     /* the cache's stripe locks (a list) */
    PyObject *source_load; /* read-through's loader, or None */
    PyObject *clock;       /* the store's clock */
    PyObject *ttl;         /* seconds (float) or None: what the store's set would use */
    PyObject *slow;        /* (key, default, loader) -> value: the Python path */
    PyObject *missing;     /* cachewise.MISSING */
    PyObject *lock_type;   /* type(stripes[0]), and its acquire / release descriptors */
    PyObject *lock_acquire;
    PyObject *lock_release;
    Flight *spare;         /* a Flight no one else holds, reused by the next miss */
    unsigned long long misses;
    unsigned long long loads;
    int observed;          /* loads are timed: a per-call loader's miss goes to the Python path
                              (source_load is then a timed wrapper, set from Python) */
    vectorcallfunc vectorcall;
} MissPath;

static PyTypeObject MissPath_Type;

/* The entry (value, expires_at) a store set with the configured ttl would make. */
static PyObject *
make_entry(MissPath *self, PyObject *value)
{
    if (self->ttl == Py_None) {
        return PyTuple_Pack(2, value, Py_None);
    }
    PyObject *now = PyObject_CallNoArgs(self->clock);
    if (now == NULL) {
        return NULL;
    }
    PyObject *expires = PyNumber_Add(now, self->ttl);
    Py_DECREF(now);
    if (expires == NULL) {
        return NULL;
    }
    PyObject *entry = PyTuple_Pack(2, value, expires);
    Py_DECREF(expires);
    return entry;
}

/* lock.acquire() / lock.release(), through the descriptor when the lock is of the
 * stripes' type (no lookup by name per call). */
static PyObject *
lock_call(MissPath *self, PyObject *lock, PyObject *descriptor, PyObject *name)
{
    if ((PyObject *)Py_TYPE(lock) == self->lock_type) {
        return PyObject_Vectorcall(descriptor, &lock, 1, NULL);
    }
    return PyObject_CallMethodNoArgs(lock, name);
}

/* Under the key's stripe lock: store the loaded value unless a write superseded it. */
static int
store_unless_superseded(MissPath *self, PyObject *key, PyObject *value, Flight *flight)
{
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1) {
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(self->stripes);
    Py_ssize_t index = (Py_ssize_t)(hash % n);
    if (index < 0) {
        index += n; /* Python's modulo: hash(key) % n is never negative */
    }
    PyObject *stripe = PyList_GET_ITEM(self->stripes, index);
    Py_INCREF(stripe);
    PyObject *r = lock_call(self, stripe, self->lock_acquire, str_acquire);
    if (r == NULL) {
        Py_DECREF(stripe);
        return -1;
    }
    Py_DECREF(r);
    int rc = 0;
    if (!flight->superseded && value != self->missing) {
        PyObject *entry = make_entry(self, value);
        rc = entry == NULL ? -1 : inserter_put((Inserter *)self->inserter, key, entry);
        Py_XDECREF(entry);
    }
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    r = lock_call(self, stripe, self->lock_release, str_release);
    Py_DECREF(stripe);
    if (r == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        return -1;
    }
    Py_DECREF(r);
    PyErr_Restore(type, exc, tb);
    return rc;
}

/* Leave the in-flight dict and release the waiters, keeping any pending exception.
 * A write that finished while the load ran has already retired the flight from the
 * dict (Cache._supersede pops it, so a read that starts after the write loads anew):
 * then the entry, if any, is a newer load's and stays. */
static int
land(MissPath *self, PyObject *key, Flight *flight)
{
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    int rc = 0;
    PyObject *current = PyDict_GetItemWithError(self->inflight, key); /* borrowed */
    if (current == (PyObject *)flight) {
        rc = PyDict_DelItem(self->inflight, key);
    }
    else if (current == NULL && PyErr_Occurred()) {
        rc = -1;
    }
    if (rc == 0) {
        rc = flight_publish(flight);
    }
    if (rc < 0) {
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        return -1;
    }
    PyErr_Restore(type, exc, tb);
    return 0;
}

static PyObject *
outcome(MissPath *self, PyObject *value, PyObject *deflt)
{
    if (value == self->missing) {
        Py_DECREF(value);
        Py_INCREF(deflt);
        return deflt;
    }
    return value;
}

/* Lead the load of ``key``: the caller has registered ``flight`` for it. */
static PyObject *
lead(MissPath *self, PyObject *key, PyObject *deflt, PyObject *loader, Flight *flight)
{
    self->loads++;
    PyObject *value = PyObject_CallOneArg(loader, key);
    if (value != NULL && store_unless_superseded(self, key, value, flight) < 0) {
        Py_CLEAR(value);
    }
    if (value == NULL) {
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL && exc != NULL) {
            PyException_SetTraceback(exc, tb);
        }
        if (exc != NULL) {
            Py_INCREF(exc);
            Py_SETREF(flight->error, exc);
        }
        PyErr_Restore(type, exc, tb);
        land(self, key, flight);
        return NULL;
    }
    Py_INCREF(value);
    Py_SETREF(flight->value, value);
    if (land(self, key, flight) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return outcome(self, value, deflt);
}

/* Keep a landed Flight for the next miss if nothing else refers to it (no waiter, no
 * writer that found it in the in-flight dict); it is reset to a fresh one. Saves a
 * GC-tracked allocation per miss. */
static void
keep_spare(MissPath *self, Flight *flight)
{
    if (self->spare != NULL || Py_REFCNT(flight) != 1 || flight->lock != NULL ||
        flight->error != Py_None) {
        Py_DECREF(flight);
        return;
    }
    Py_SETREF(flight->value, Py_NewRef(self->missing));
    flight->superseded = 0;
    flight->done = 0;
    self->spare = flight;
}

static PyObject *
call_slow(MissPath *self, PyObject *key, PyObject *deflt, PyObject *loader)
{
    PyObject *args[3] = {key, deflt, loader};
    return PyObject_Vectorcall(self->slow, args, 3, NULL);
}

static PyObject *
MissPath_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    MissPath *self = (MissPath *)callable;
    if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "MissPath takes (key, default, loader)");
        return NULL;
    }
    if (self->data == NULL) { /* only after tp_clear, while a cycle is collected */
        PyErr_SetString(PyExc_RuntimeError, "MissPath used after it was cleared");
        return NULL;
    }
    PyObject *key = args[0], *deflt = args[1], *loader = args[2];
    PyTypeObject *kind = Py_TYPE(key);
    if (kind != &PyUnicode_Type && kind != &PyLong_Type && kind != &PyBytes_Type) {
        return call_slow(self, key, deflt, loader); /* tuples and bad keys */
    }
    PyObject *entry = PyDict_GetItemWithError(self->data, key);
    if (entry != NULL || PyErr_Occurred()) {
        if (entry == NULL) {
            return NULL;
        }
        return call_slow(self, key, deflt, loader); /* expired, or written since */
    }
    if (self->observed && loader != Py_None) { /* the Python path times and traces it */
        return call_slow(self, key, deflt, loader);
    }
    self->misses++;
    if (loader == Py_None) {
        loader = self->source_load;
    }
    if (loader == Py_None) {
        Py_INCREF(deflt);
        return deflt;
    }
    Flight *flight = self->spare;
    self->spare = NULL;
    if (flight == NULL && (flight = flight_create(self->missing)) == NULL) {
        return NULL;
    }
    PyObject *leader = PyDict_SetDefault(self->inflight, key, (PyObject *)flight);
    if (leader == NULL) {
        Py_DECREF(flight);
        return NULL;
    }
    if (leader != (PyObject *)flight) { /* another thread loads it: wait for its outcome */
        Py_INCREF(leader);
        Py_DECREF(flight);
        PyObject *value = PyObject_CallMethodNoArgs(leader, str_wait);
        Py_DECREF(leader);
        return value == NULL ? NULL : outcome(self, value, deflt);
    }
    Py_INCREF(loader);
    PyObject *value = lead(self, key, deflt, loader, flight);
    Py_DECREF(loader);
    keep_spare(self, flight);
    return value;
}

static PyObject *
MissPath_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data",  "inserter", "inflight", "stripes", "source_load",
                             "clock", "ttl",      "slow",     "missing", NULL};
    PyObject *data, *inserter, *inflight, *stripes, *source_load, *clock, *ttl, *slow, *missing;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!OOOOO:MissPath", kwlist, &PyDict_Type,
                                     &data, &Inserter_Type, &inserter, &PyDict_Type, &inflight,
                                     &PyList_Type, &stripes, &source_load, &clock, &ttl, &slow,
                                     &missing)) {
        return NULL;
    }
    if (PyList_GET_SIZE(stripes) == 0 || !PyCallable_Check(clock) || !PyCallable_Check(slow) ||
        (source_load != Py_None && !PyCallable_Check(source_load))) {
        PyErr_SetString(PyExc_TypeError,
                        "MissPath: stripes must not be empty; clock, slow and source_load "
                        "(or None) must be callable");
        return NULL;
    }
    if (ttl != Py_None && !PyFloat_CheckExact(ttl)) {
        PyErr_SetString(PyExc_TypeError, "MissPath: ttl must be a float or None");
        return NULL;
    }
    MissPath *self = (MissPath *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    PyObject **slots[] = {&self->data,  &self->inserter, &self->inflight,
                          &self->stripes, &self->source_load, &self->clock,
                          &self->ttl,   &self->slow,     &self->missing};
    PyObject *values[] = {data, inserter, inflight, stripes, source_load, clock, ttl, slow,
                          missing};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        Py_INCREF(values[i]);
        *slots[i] = values[i];
    }
    self->misses = 0;
    self->loads = 0;
    self->observed = 0;
    self->vectorcall = MissPath_vectorcall;
    self->lock_type = Py_NewRef((PyObject *)Py_TYPE(PyList_GET_ITEM(stripes, 0)));
    self->lock_acquire = PyObject_GetAttr(self->lock_type, str_acquire);
    self->lock_release = self->lock_acquire ? PyObject_GetAttr(self->lock_type, str_release) : NULL;
    if (self->lock_release == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
MissPath_traverse(MissPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->data);
    Py_VISIT(self->inserter);
    Py_VISIT(self->inflight);
    Py_VISIT(self->stripes);
    Py_VISIT(self->source_load);
    Py_VISIT(self->clock);
    Py_VISIT(self->ttl);
    Py_VISIT(self->slow);
    Py_VISIT(self->missing);
    Py_VISIT(self->lock_type);
    Py_VISIT(self->lock_acquire);
    Py_VISIT(self->lock_release);
    Py_VISIT(self->spare);
    return 0;
}

static int
MissPath_clear(MissPath *self)
{
    Py_CLEAR(self->data);
    Py_CLEAR(self->inserter);
    Py_CLEAR(self->inflight);
    Py_CLEAR(self->stripes);
    Py_CLEAR(self->source_load);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->ttl);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->missing);
    Py_CLEAR(self->lock_type);
    Py_CLEAR(self->lock_acquire);
    Py_CLEAR(self->lock_release);
    Py_CLEAR(self->spare);
    return 0;
}

static void
MissPath_dealloc(MissPath *self)
{
    PyObject_GC_UnTrack(self);
    MissPath_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
MissPath_get_misses(MissPath *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->misses);
}

static PyObject *
MissPath_get_loads(MissPath *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->loads);
}

static PyObject *
MissPath_get_observed(MissPath *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->observed);
}

static int
MissPath_set_observed(MissPath *self, PyObject *value, void *closure)
{
    (void)closure;
    int flag = value == NULL ? 0 : PyObject_IsTrue(value);
    if (flag < 0) {
        return -1;
    }
    self->observed = flag;
    return 0;
}

static PyObject *
MissPath_get_source_load(MissPath *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->source_load);
}

static int
MissPath_set_source_load(MissPath *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL || (value != Py_None && !PyCallable_Check(value))) {
        PyErr_SetString(PyExc_TypeError, "MissPath.source_load must be callable or None");
        return -1;
    }
    Py_SETREF(self->source_load, Py_NewRef(value));
    return 0;
}

static PyGetSetDef MissPath_getset[] = {
    {"source_load", (getter)MissPath_get_source_load, (setter)MissPath_set_source_load,
     "Read-through's loader (None: cache-aside); metrics swap in a timed one.", NULL},
    {"observed", (getter)MissPath_get_observed, (setter)MissPath_set_observed,
     "True: loads are timed; a miss with a per-call loader goes to the Python path.",
     NULL},
    {"misses", (getter)MissPath_get_misses, NULL, "Misses counted here (exact).", NULL},
    {"loads", (getter)MissPath_get_loads, NULL, "Loads this path led (exact).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MissPath_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.MissPath",
    .tp_basicsize = sizeof(MissPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "MissPath(data, inserter, inflight, stripes, source_load, clock, ttl, slow, "
              "missing)\n--\n\n"
              "path(key, default, loader): Cache.read past its hit for a MemoryStore.",
    .tp_new = MissPath_new,
    .tp_dealloc = (destructor)MissPath_dealloc,
    .tp_traverse = (traverseproc)MissPath_traverse,
    .tp_clear = (inquiry)MissPath_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(MissPath, vectorcall),
    .tp_getset = MissPath_getset,
};

/* ------------------------------------------------------------------ module */

int
cw_misspath_init(PyObject *module)
{
    if (allocate_lock == NULL) {
        PyObject *thread = PyImport_ImportModule("_thread");
        if (thread == NULL) {
            return -1;
        }
        allocate_lock = PyObject_GetAttrString(thread, "allocate_lock");
        Py_DECREF(thread);
        if (allocate_lock == NULL) {
            return -1;
        }
        str_acquire = PyUnicode_InternFromString("acquire");
        str_release = PyUnicode_InternFromString("release");
        str_wait = PyUnicode_InternFromString("wait");
        if (str_acquire == NULL || str_release == NULL || str_wait == NULL) {
            return -1;
        }
    }
    PyTypeObject *types[] = {&Flight_Type, &Inserter_Type, &MissPath_Type};
    const char *names[] = {"Flight", "Inserter", "MissPath"};
    for (size_t i = 0; i < 3; i++) {
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
