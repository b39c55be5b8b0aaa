/* cachewise._speedups, part three: W-TinyLFU in C (stores/eviction.py's WTinyLFU).
 *
 * The same algorithm, decision for decision: a window LRU, a segmented main space
 * (probation, protected = 80%), admission by a 4-row count-min sketch of byte counters
 * (capped at 15, conservative update, halved every ``period * capacity`` additions,
 * the same double hashing of hash(key)). The queues are OrderedDicts driven through
 * their C methods. Differences from the Python class: a hit is applied at once instead
 * of being buffered (each method runs with the GIL held and calls no Python code for
 * str/int/bytes/tuple keys, so a lock-free hit cannot interleave with an eviction),
 * and so no hit is ever dropped. Why C: the sketch's hashing and counters are most of
 * W-TinyLFU's cost in Python (about 4 microseconds per request).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "_odict.h"

#define GOLDEN 0x9E3779B97F4A7C15ULL


typedef struct {
    PyObject_HEAD
    PyObject *window, *probation, *protected_; /* OrderedDict: key -> None */
    unsigned char *table;                     /* 4 rows of width counters, or NULL */
    uint64_t width, mask;
    Py_ssize_t period, additions;
    Py_ssize_t capacity; /* 0: learn at the first eviction */
    double window_ratio;
    Py_ssize_t period_factor, margin;
    double window_max;
} WTinyLFU;

/* --- the sketch ------------------------------------------------------------------ */

static int
sketch_size(WTinyLFU *self, Py_ssize_t capacity)
{
    uint64_t need = (uint64_t)(8 * capacity - 1);
    int bits = 0;
    while (need >> bits) {
        bits++;
    }
    if (bits < 4) {
        bits = 4;
    }
    uint64_t width = (uint64_t)1 << bits;
    unsigned char *table = PyMem_Calloc(4 * width, 1);
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(self->table);
    self->table = table;
    self->width = width;
    self->mask = width - 1;
    self->period = self->period_factor * capacity;
    self->additions = 0;
    return 0;
}

static int
slots(WTinyLFU *self, PyObject *key, uint64_t out[4])
{
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1) {
        return -1;
    }
    uint64_t spread = (uint64_t)hash * GOLDEN;
    uint64_t first = spread & 0xFFFFFFFFULL, step = (spread >> 32) | 1;
    for (uint64_t row = 0; row < 4; row++) {
        out[row] = row * self->width + ((first + row * step) & self->mask);
    }
    return 0;
}

/* The least of the key's four counters: its estimate. */
static unsigned char
least_of(WTinyLFU *self, const uint64_t s[4])
{
    unsigned char least = self->table[s[0]];
    for (int i = 1; i < 4; i++) {
        if (self->table[s[i]] < least) {
            least = self->table[s[i]];
        }
    }
    return least;
}

static int
sketch_estimate(WTinyLFU *self, PyObject *key)
{
    uint64_t s[4];
    if (slots(self, key, s) < 0) {
        return -1;
    }
    return least_of(self, s);
}

static int
sketch_add(WTinyLFU *self, PyObject *key)
{
    if (self->table == NULL) {
        return 0;
    }
    uint64_t s[4];
    if (slots(self, key, s) < 0) {
        return -1;
    }
    unsigned char least = least_of(self, s);
    if (least < 15) {
        for (int i = 0; i < 4; i++) {
            if (self->table[s[i]] == least) {
                self->table[s[i]] = (unsigned char)(least + 1);
            }
        }
    }
    if (++self->additions >= self->period) {
        self->additions = 0;
        for (uint64_t i = 0; i < 4 * self->width; i++) {
            self->table[i] >>= 1;
        }
    }
    return 0;
}

/* --- the policy ---------------------------------------------------------------------- */

static int
wt_size(WTinyLFU *self, Py_ssize_t capacity)
{
    self->capacity = capacity;
    double w = (double)capacity * self->window_ratio;
    self->window_max = w > 1.0 ? w : 1.0;
    return sketch_size(self, capacity);
}

static Py_ssize_t
protected_max(WTinyLFU *self)
{
    return (Py_ssize_t)(0.8 * (double)(self->capacity - (Py_ssize_t)self->window_max));
}

static PyObject *
WTinyLFU_on_hit(WTinyLFU *self, PyObject *key)
{
    int in;
    if ((in = PyDict_Contains(self->window, key)) != 0) {
        if (in < 0 || od_move_to_end(self->window, key) < 0) {
            return NULL;
        }
    }
    else if ((in = PyDict_Contains(self->protected_, key)) != 0) {
        if (in < 0 || od_move_to_end(self->protected_, key) < 0) {
            return NULL;
        }
    }
    else if ((in = PyDict_Contains(self->probation, key)) != 0) {
        if (in < 0 || PyObject_DelItem(self->probation, key) < 0 ||
            od_put(self->protected_, key) < 0) {
            return NULL;
        }
        if (PyDict_GET_SIZE(self->protected_) > protected_max(self)) {
            PyObject *demoted = od_pop_first(self->protected_);
            if (demoted == NULL) {
                return NULL;
            }
            int rc = od_put(self->probation, demoted);
            Py_DECREF(demoted);
            if (rc < 0) {
                return NULL;
            }
        }
    }
    else {
        Py_RETURN_NONE; /* left the cache since the lookup */
    }
    if (sketch_add(self, key) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
WTinyLFU_on_insert(WTinyLFU *self, PyObject *key)
{
    if (od_put(self->window, key) < 0 || sketch_add(self, key) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
WTinyLFU_on_remove(WTinyLFU *self, PyObject *key)
{
    int gone = od_discard(self->window, key);
    if (gone == 0) {
        gone = od_discard(self->probation, key);
    }
    if (gone == 0) {
        gone = od_discard(self->protected_, key);
    }
    if (gone < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static Py_ssize_t
resident(WTinyLFU *self)
{
    return PyDict_GET_SIZE(self->window) + PyDict_GET_SIZE(self->probation) +
           PyDict_GET_SIZE(self->protected_);
}

static PyObject *
main_victim(WTinyLFU *self)
{
    return PyDict_GET_SIZE(self->probation) ? self->probation : self->protected_;
}

static PyObject *
WTinyLFU_evict(WTinyLFU *self, PyObject *unused)
{
    (void)unused;
    if (resident(self) == 0) {
        PyErr_SetString(PyExc_KeyError, "evict from an empty policy");
        return NULL;
    }
    if (!self->capacity) {
        Py_ssize_t n = resident(self) - 1;
        if (wt_size(self, n > 1 ? n : 1) < 0) {
            return NULL;
        }
    }
    Py_ssize_t window_max = (Py_ssize_t)self->window_max;
    Py_ssize_t main_max = self->capacity - window_max;
    /* Window overflow moves into free main space without a contest. */
    while (PyDict_GET_SIZE(self->window) > window_max &&
           PyDict_GET_SIZE(self->probation) + PyDict_GET_SIZE(self->protected_) < main_max) {
        PyObject *key = od_pop_first(self->window);
        if (key == NULL) {
            return NULL;
        }
        int rc = od_put(self->probation, key);
        Py_DECREF(key);
        if (rc < 0) {
            return NULL;
        }
    }
    if (PyDict_GET_SIZE(self->window) > window_max ||
        !(PyDict_GET_SIZE(self->probation) || PyDict_GET_SIZE(self->protected_))) {
        PyObject *candidate = od_pop_first(self->window);
        if (candidate == NULL) {
            return NULL;
        }
        PyObject *main = main_victim(self);
        if (PyDict_GET_SIZE(main) == 0) {
            return candidate;
        }
        PyObject *victim = od_first(main);
        if (victim == NULL) {
            Py_DECREF(candidate);
            return NULL;
        }
        int c = sketch_estimate(self, candidate), v = sketch_estimate(self, victim);
        if (c < 0 || v < 0) {
            Py_DECREF(candidate);
            Py_DECREF(victim);
            return NULL;
        }
        if (c > v + self->margin) {
            if (PyObject_DelItem(main, victim) < 0 || od_put(self->probation, candidate) < 0) {
                Py_DECREF(candidate);
                Py_DECREF(victim);
                return NULL;
            }
            Py_DECREF(candidate);
            return victim;
        }
        Py_DECREF(victim);
        return candidate;
    }
    return od_pop_first(main_victim(self));
}

static PyObject *
WTinyLFU_survivors(WTinyLFU *self, PyObject *unused)
{
    (void)unused;
    PyObject *parts[] = {self->probation, self->window, self->protected_, NULL};
    return od_keys_of(parts);
}

static PyObject *
WTinyLFU_clear_policy(WTinyLFU *self, PyObject *unused)
{
    (void)unused;
    if (od_clear(self->window) < 0 || od_clear(self->probation) < 0 ||
        od_clear(self->protected_) < 0) {
        return NULL;
    }
    if (self->table != NULL && sketch_size(self, self->capacity) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static Py_ssize_t
WTinyLFU_len(WTinyLFU *self)
{
    return resident(self);
}

static PyObject *
WTinyLFU_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "window", "period", "margin", NULL};
    PyObject *capacity = Py_None;
    double window = 0.01;
    Py_ssize_t period = 20, margin = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$dnn:WTinyLFU", kwlist, &capacity, &window,
                                     &period, &margin)) {
        return NULL;
    }
    Py_ssize_t cap = 0;
    if (capacity != Py_None) {
        cap = PyLong_AsSsize_t(capacity);
        if (cap == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (cap < 1) {
            PyErr_SetString(PyExc_ValueError, "WTinyLFU: capacity must be >= 1");
            return NULL;
        }
    }
    WTinyLFU *self = (WTinyLFU *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->window_ratio = window;
    self->period_factor = period;
    self->margin = margin;
    self->window_max = 1.0;
    self->window = od_new();
    self->probation = od_new();
    self->protected_ = od_new();
    if (self->window == NULL || self->probation == NULL || self->protected_ == NULL ||
        (cap && wt_size(self, cap) < 0)) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
WTinyLFU_traverse(WTinyLFU *self, visitproc visit, void *arg)
{
    Py_VISIT(self->window);
    Py_VISIT(self->probation);
    Py_VISIT(self->protected_);
    return 0;
}

static int
WTinyLFU_clear(WTinyLFU *self)
{
    Py_CLEAR(self->window);
    Py_CLEAR(self->probation);
    Py_CLEAR(self->protected_);
    return 0;
}

static void
WTinyLFU_dealloc(WTinyLFU *self)
{
    PyObject_GC_UnTrack(self);
    WTinyLFU_clear(self);
    PyMem_Free(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
WTinyLFU_get_true(PyObject *self, void *closure)
{
    (void)self;
    (void)closure;
    Py_RETURN_TRUE;
}

static PyObject *
WTinyLFU_estimate(WTinyLFU *self, PyObject *key)
{
    if (self->table == NULL) {
        return PyLong_FromLong(0);
    }
    int n = sketch_estimate(self, key);
    return n < 0 ? NULL : PyLong_FromLong(n);
}

static PyMethodDef WTinyLFU_methods[] = {
    {"on_hit", (PyCFunction)WTinyLFU_on_hit, METH_O, "Record an access to a resident key."},
    {"on_insert", (PyCFunction)WTinyLFU_on_insert, METH_O, "Record a new resident key."},
    {"on_remove", (PyCFunction)WTinyLFU_on_remove, METH_O,
     "Forget a key removed by delete or expiry."},
    {"evict", (PyCFunction)WTinyLFU_evict, METH_NOARGS, "Choose a victim, forget and return it."},
    {"survivors", (PyCFunction)WTinyLFU_survivors, METH_NOARGS,
     "The keys: probation, window, then protected, each oldest first."},
    {"clear", (PyCFunction)WTinyLFU_clear_policy, METH_NOARGS, "Forget every key."},
    {"estimate", (PyCFunction)WTinyLFU_estimate, METH_O,
     "The sketch's estimate of the key's recent accesses."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef WTinyLFU_getset[] = {
    {"atomic_hits", (getter)WTinyLFU_get_true, NULL, "A hit is one C call: no lock needed.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods WTinyLFU_as_sequence = {
    .sq_length = (lenfunc)WTinyLFU_len,
};

static PyTypeObject WTinyLFU_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.WTinyLFU",
    .tp_basicsize = sizeof(WTinyLFU),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "WTinyLFU(capacity=None, *, window=0.01, period=20, margin=1): the eviction\n"
              "policy of stores/eviction.py's WTinyLFU, in C (same decisions).",
    .tp_new = WTinyLFU_new,
    .tp_dealloc = (destructor)WTinyLFU_dealloc,
    .tp_traverse = (traverseproc)WTinyLFU_traverse,
    .tp_clear = (inquiry)WTinyLFU_clear,
    .tp_methods = WTinyLFU_methods,
    .tp_getset = WTinyLFU_getset,
    .tp_as_sequence = &WTinyLFU_as_sequence,
};

int
cw_wtinylfu_init(PyObject *module)
{
    if (od_init() < 0) {
        return -1;
    }
    if (PyType_Ready(&WTinyLFU_Type) < 0) {
        return -1;
    }
    Py_INCREF(&WTinyLFU_Type);
    if (PyModule_AddObject(module, "WTinyLFU", (PyObject *)&WTinyLFU_Type) < 0) {
        Py_DECREF(&WTinyLFU_Type);
        return -1;
    }
    return 0;
}
