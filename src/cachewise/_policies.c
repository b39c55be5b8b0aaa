/* cachewise._speedups, part four: LRU, SIEVE, S3-FIFO and ARC in C.
 *
 * Each policy is stores/eviction.py's class of the same name, decision for decision
 * (tests/unit/test_c_policies.py replays both side by side), with one difference: a
 * hit is applied at once instead of being buffered. Each method runs with the GIL held
 * and calls no Python code for the cache's key types, so a lock-free hit cannot
 * interleave with an eviction. Why C: on a cache that misses a third of the time, the
 * policy's bookkeeping in Python costs as much as the whole miss of a peer cache.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_odict.h"

static PyObject *gone = NULL; /* marks a dead slot in SIEVE's queue */
static PyObject *s_move_to_end = NULL, *s_reversed = NULL, *s_add = NULL;

static PyObject *
get_true(PyObject *self, void *closure)
{
    (void)self;
    (void)closure;
    Py_RETURN_TRUE;
}

static PyGetSetDef atomic_getset[] = {
    {"atomic_hits", (getter)get_true, NULL, "A hit is one C call: no lock needed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static int
parse_capacity(PyObject *capacity, Py_ssize_t *out)
{
    *out = 0;
    if (capacity == Py_None) {
        return 0;
    }
    *out = PyLong_AsSsize_t(capacity);
    if (*out == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (*out < 1) {
        PyErr_SetString(PyExc_ValueError, "capacity must be >= 1");
        return -1;
    }
    return 0;
}

static PyObject *
empty_error(void)
{
    if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_KeyError, "evict from an empty policy");
    }
    return NULL;
}

/* ===================================================================== LRU */

typedef struct {
    PyObject_HEAD
    PyObject *order;  /* OrderedDict in access order */
    PyObject *on_hit; /* order.move_to_end */
} LRU;

static PyObject *
LRU_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", NULL};
    PyObject *capacity = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:LRU", kwlist, &capacity)) {
        return NULL;
    }
    LRU *self = (LRU *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->order = od_new();
    self->on_hit = self->order ? PyObject_GetAttr(self->order, s_move_to_end) : NULL;
    if (self->on_hit == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
LRU_on_insert(LRU *self, PyObject *key)
{
    return od_put(self->order, key) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
LRU_on_remove(LRU *self, PyObject *key)
{
    return od_discard(self->order, key) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
LRU_evict(LRU *self, PyObject *unused)
{
    (void)unused;
    PyObject *key = od_pop_first(self->order);
    return key != NULL ? key : empty_error();
}

static PyObject *
LRU_survivors(LRU *self, PyObject *unused)
{
    (void)unused;
    PyObject *parts[] = {self->order, NULL};
    return od_keys_of(parts);
}

static PyObject *
LRU_clear_policy(LRU *self, PyObject *unused)
{
    (void)unused;
    return od_clear(self->order) < 0 ? NULL : Py_NewRef(Py_None);
}

static Py_ssize_t
LRU_len(LRU *self)
{
    return PyDict_GET_SIZE(self->order);
}

static int
LRU_traverse(LRU *self, visitproc visit, void *arg)
{
    Py_VISIT(self->order);
    Py_VISIT(self->on_hit);
    return 0;
}

static int
LRU_clear(LRU *self)
{
    Py_CLEAR(self->order);
    Py_CLEAR(self->on_hit);
    return 0;
}

static void
LRU_dealloc(LRU *self)
{
    PyObject_GC_UnTrack(self);
    LRU_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef LRU_methods[] = {
    {"on_insert", (PyCFunction)LRU_on_insert, METH_O, "Record a new resident key."},
    {"on_remove", (PyCFunction)LRU_on_remove, METH_O, "Forget a removed key."},
    {"evict", (PyCFunction)LRU_evict, METH_NOARGS, "Remove and return the least recent key."},
    {"survivors", (PyCFunction)LRU_survivors, METH_NOARGS, "The keys, the next victim first."},
    {"clear", (PyCFunction)LRU_clear_policy, METH_NOARGS, "Forget every key."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef LRU_members[] = {
    {"on_hit", T_OBJECT, offsetof(LRU, on_hit), READONLY, "order.move_to_end: one C call."},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods LRU_as_sequence = {.sq_length = (lenfunc)LRU_len};

static PyTypeObject LRU_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.LRU",
    .tp_basicsize = sizeof(LRU),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "LRU(capacity=None): stores/eviction.py's LRU in C.",
    .tp_new = LRU_new,
    .tp_dealloc = (destructor)LRU_dealloc,
    .tp_traverse = (traverseproc)LRU_traverse,
    .tp_clear = (inquiry)LRU_clear,
    .tp_methods = LRU_methods,
    .tp_members = LRU_members,
    .tp_getset = atomic_getset,
    .tp_as_sequence = &LRU_as_sequence,
};

/* =================================================================== SIEVE */

typedef struct {
    PyObject_HEAD
    PyObject *order;   /* list of keys, oldest first; dead slots hold ``gone`` */
    PyObject *pos;     /* dict: key -> index in order */
    PyObject *visited; /* set */
    PyObject *on_hit;  /* visited.add */
    PyObject *newest;  /* the key just inserted, or NULL */
    Py_ssize_t hand, dead;
} SIEVE;

static PyObject *
SIEVE_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", NULL};
    PyObject *capacity = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:SIEVE", kwlist, &capacity)) {
        return NULL;
    }
    SIEVE *self = (SIEVE *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->order = PyList_New(0);
    self->pos = PyDict_New();
    self->visited = PySet_New(NULL);
    self->on_hit = self->visited ? PyObject_GetAttr(self->visited, s_add) : NULL;
    if (self->order == NULL || self->pos == NULL || self->on_hit == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
SIEVE_on_insert(SIEVE *self, PyObject *key)
{
    if (PySet_Discard(self->visited, key) < 0) { /* a racing hit may have marked it */
        return NULL;
    }
    PyObject *index = PyLong_FromSsize_t(PyList_GET_SIZE(self->order));
    if (index == NULL) {
        return NULL;
    }
    int rc = PyDict_SetItem(self->pos, key, index);
    Py_DECREF(index);
    if (rc < 0 || PyList_Append(self->order, key) < 0) {
        return NULL;
    }
    Py_XSETREF(self->newest, Py_NewRef(key));
    Py_RETURN_NONE;
}

/* Drop the dead slots; keep the hand on the same live key. */
static int
SIEVE_compact(SIEVE *self)
{
    Py_ssize_t n = PyList_GET_SIZE(self->order), hand = 0;
    PyObject *live = PyList_New(0);
    PyObject *pos = PyDict_New();
    if (live == NULL || pos == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(self->order, i);
        if (i == self->hand) {
            hand = PyList_GET_SIZE(live);
        }
        if (key == gone) {
            continue;
        }
        PyObject *index = PyLong_FromSsize_t(PyList_GET_SIZE(live));
        if (index == NULL) {
            goto fail;
        }
        int rc = PyDict_SetItem(pos, key, index);
        Py_DECREF(index);
        if (rc < 0 || PyList_Append(live, key) < 0) {
            goto fail;
        }
    }
    if (self->hand >= n) {
        hand = PyList_GET_SIZE(live);
    }
    /* visited &= pos, in place: on_hit is this set's own add */
    PyObject *marks = PySequence_List(self->visited);
    if (marks == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(marks); i++) {
        PyObject *key = PyList_GET_ITEM(marks, i);
        int in = PyDict_Contains(pos, key);
        if (in < 0 || (in == 0 && PySet_Discard(self->visited, key) < 0)) {
            Py_DECREF(marks);
            goto fail;
        }
    }
    Py_DECREF(marks);
    Py_SETREF(self->order, live);
    Py_SETREF(self->pos, pos);
    self->hand = hand;
    self->dead = 0;
    return 0;
fail:
    Py_XDECREF(live);
    Py_XDECREF(pos);
    return -1;
}

static PyObject *
SIEVE_on_remove(SIEVE *self, PyObject *key)
{
    PyObject *index = PyDict_GetItemWithError(self->pos, key);
    if (index == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_ssize_t i = PyLong_AsSsize_t(index);
    if (PyDict_DelItem(self->pos, key) < 0) {
        return NULL;
    }
    Py_INCREF(gone);
    if (PyList_SetItem(self->order, i, gone) < 0 || PySet_Discard(self->visited, key) < 0) {
        return NULL;
    }
    self->dead++;
    if (self->dead > PyDict_GET_SIZE(self->pos) && SIEVE_compact(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
SIEVE_evict(SIEVE *self, PyObject *unused)
{
    (void)unused;
    if (PyDict_GET_SIZE(self->pos) == 0) {
        return empty_error();
    }
    PyObject *newest = self->newest; /* owned until the end */
    self->newest = NULL;
    Py_ssize_t hand = self->hand;
    PyObject *key;
    for (;;) {
        if (hand >= PyList_GET_SIZE(self->order)) {
            hand = 0;
        }
        key = PyList_GET_ITEM(self->order, hand);
        hand++;
        if (key == gone) {
            continue;
        }
        int seen = PySet_Discard(self->visited, key);
        if (seen < 0) {
            Py_XDECREF(newest);
            return NULL;
        }
        if (seen) {
            continue;
        }
        if (newest != NULL && PyDict_GET_SIZE(self->pos) > 1) {
            int same = PyObject_RichCompareBool(key, newest, Py_EQ);
            if (same < 0) {
                Py_XDECREF(newest);
                return NULL;
            }
            if (same) {
                continue; /* just admitted: not a candidate yet (evict-before-insert) */
            }
        }
        break;
    }
    Py_XDECREF(newest);
    Py_INCREF(key);
    Py_INCREF(gone);
    if (PyList_SetItem(self->order, hand - 1, gone) < 0 || PyDict_DelItem(self->pos, key) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    self->hand = hand;
    self->dead++;
    if (self->dead > PyDict_GET_SIZE(self->pos) && SIEVE_compact(self) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    return key;
}

static PyObject *
SIEVE_clear_policy(SIEVE *self, PyObject *unused)
{
    (void)unused;
    if (PyList_SetSlice(self->order, 0, PyList_GET_SIZE(self->order), NULL) < 0 ||
        PySet_Clear(self->visited) < 0) {
        return NULL;
    }
    PyDict_Clear(self->pos);
    Py_CLEAR(self->newest);
    self->hand = 0;
    self->dead = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t
SIEVE_len(SIEVE *self)
{
    return PyDict_GET_SIZE(self->pos);
}

static int
SIEVE_traverse(SIEVE *self, visitproc visit, void *arg)
{
    Py_VISIT(self->order);
    Py_VISIT(self->pos);
    Py_VISIT(self->visited);
    Py_VISIT(self->on_hit);
    Py_VISIT(self->newest);
    return 0;
}

static int
SIEVE_clear(SIEVE *self)
{
    Py_CLEAR(self->order);
    Py_CLEAR(self->pos);
    Py_CLEAR(self->visited);
    Py_CLEAR(self->on_hit);
    Py_CLEAR(self->newest);
    return 0;
}

static void
SIEVE_dealloc(SIEVE *self)
{
    PyObject_GC_UnTrack(self);
    SIEVE_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef SIEVE_methods[] = {
    {"on_insert", (PyCFunction)SIEVE_on_insert, METH_O, "Record a new resident key."},
    {"on_remove", (PyCFunction)SIEVE_on_remove, METH_O, "Forget a removed key."},
    {"evict", (PyCFunction)SIEVE_evict, METH_NOARGS, "Move the hand; return the victim."},
    {"clear", (PyCFunction)SIEVE_clear_policy, METH_NOARGS, "Forget every key."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef SIEVE_members[] = {
    {"on_hit", T_OBJECT, offsetof(SIEVE, on_hit), READONLY, "visited.add: one C call."},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods SIEVE_as_sequence = {.sq_length = (lenfunc)SIEVE_len};

static PyTypeObject SIEVE_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.SIEVE",
    .tp_basicsize = sizeof(SIEVE),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "SIEVE(capacity=None): stores/eviction.py's SIEVE in C.",
    .tp_new = SIEVE_new,
    .tp_dealloc = (destructor)SIEVE_dealloc,
    .tp_traverse = (traverseproc)SIEVE_traverse,
    .tp_clear = (inquiry)SIEVE_clear,
    .tp_methods = SIEVE_methods,
    .tp_members = SIEVE_members,
    .tp_getset = atomic_getset,
    .tp_as_sequence = &SIEVE_as_sequence,
};

/* ================================================================== S3FIFO */

typedef struct {
    PyObject_HEAD
    PyObject *small, *main, *ghost; /* OrderedDicts */
    PyObject *freq;                 /* dict: resident key -> hits left (0..3) */
    PyObject *newest;               /* the key just inserted, or NULL */
    Py_ssize_t small_max, ghost_max;
} S3FIFO;

static void
s3_size(S3FIFO *self, Py_ssize_t capacity)
{
    Py_ssize_t small = (Py_ssize_t)((double)capacity * 0.1);
    Py_ssize_t ghost = (Py_ssize_t)((double)capacity * 0.9);
    self->small_max = small > 1 ? small : 1;
    self->ghost_max = ghost > 1 ? ghost : 1;
}

static PyObject *
S3FIFO_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", NULL};
    PyObject *capacity = Py_None;
    Py_ssize_t cap;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:S3FIFO", kwlist, &capacity) ||
        parse_capacity(capacity, &cap) < 0) {
        return NULL;
    }
    S3FIFO *self = (S3FIFO *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->small = od_new();
    self->main = od_new();
    self->ghost = od_new();
    self->freq = PyDict_New();
    if (!self->small || !self->main || !self->ghost || !self->freq) {
        Py_DECREF(self);
        return NULL;
    }
    if (cap) {
        s3_size(self, cap);
    }
    return (PyObject *)self;
}

static PyObject *
S3FIFO_on_hit(S3FIFO *self, PyObject *key)
{
    PyObject *freq = PyDict_GetItemWithError(self->freq, key);
    if (freq == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    long n = PyLong_AsLong(freq);
    if (n < 3) {
        PyObject *more = PyLong_FromLong(n + 1);
        int rc = more == NULL ? -1 : PyDict_SetItem(self->freq, key, more);
        Py_XDECREF(more);
        if (rc < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static int
set_freq(S3FIFO *self, PyObject *key, long n)
{
    PyObject *value = PyLong_FromLong(n);
    int rc = value == NULL ? -1 : PyDict_SetItem(self->freq, key, value);
    Py_XDECREF(value);
    return rc;
}

static PyObject *
S3FIFO_on_insert(S3FIFO *self, PyObject *key)
{
    int ghosted = od_discard(self->ghost, key);
    if (ghosted < 0 || od_put(ghosted ? self->main : self->small, key) < 0 ||
        set_freq(self, key, 0) < 0) {
        return NULL;
    }
    Py_XSETREF(self->newest, Py_NewRef(key));
    Py_RETURN_NONE;
}

static PyObject *
S3FIFO_on_remove(S3FIFO *self, PyObject *key)
{
    int in = PyDict_Contains(self->freq, key);
    if (in <= 0) {
        return in < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (PyDict_DelItem(self->freq, key) < 0) {
        return NULL;
    }
    int was_small = od_discard(self->small, key);
    if (was_small < 0 || (was_small == 0 && PyObject_DelItem(self->main, key) < 0)) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
ghost_add(S3FIFO *self, PyObject *key)
{
    if (od_put(self->ghost, key) < 0) {
        return -1;
    }
    if (PyDict_GET_SIZE(self->ghost) > self->ghost_max) {
        PyObject *old = od_pop_first(self->ghost);
        if (old == NULL) {
            return -1;
        }
        Py_DECREF(old);
    }
    return 0;
}

static PyObject *
S3FIFO_evict(S3FIFO *self, PyObject *unused)
{
    (void)unused;
    if (PyDict_GET_SIZE(self->freq) == 0) {
        return empty_error();
    }
    if (!self->small_max) {
        Py_ssize_t n = PyDict_GET_SIZE(self->freq) - 1;
        s3_size(self, n > 1 ? n : 1);
    }
    PyObject *newest = NULL; /* only when it is in the small queue */
    if (self->newest != NULL) {
        int in = PyDict_Contains(self->small, self->newest);
        if (in < 0) {
            return NULL;
        }
        if (in) {
            newest = self->newest; /* take the reference */
            self->newest = NULL;
        }
    }
    Py_CLEAR(self->newest);
    PyObject *result = NULL;
    for (;;) {
        Py_ssize_t in_small = PyDict_GET_SIZE(self->small) - (newest != NULL);
        if (in_small > 0 && (in_small >= self->small_max || PyDict_GET_SIZE(self->main) == 0)) {
            PyObject *key = od_pop_first(self->small);
            if (key == NULL) {
                break;
            }
            int same = newest == NULL ? 0 : PyObject_RichCompareBool(key, newest, Py_EQ);
            if (same) { /* not a candidate yet: back to the tail (or an error) */
                int rc = same < 0 ? -1 : od_put(self->small, key);
                Py_DECREF(key);
                if (rc < 0) {
                    break;
                }
                continue;
            }
            PyObject *freq = PyDict_GetItemWithError(self->freq, key);
            long n = freq == NULL ? -1 : PyLong_AsLong(freq);
            if (n < 0) {
                Py_DECREF(key);
                break;
            }
            if (n >= 1) { /* promote_at */
                if (set_freq(self, key, 0) < 0 || od_put(self->main, key) < 0) {
                    Py_DECREF(key);
                    break;
                }
                Py_DECREF(key);
                continue;
            }
            if (PyDict_DelItem(self->freq, key) < 0 || ghost_add(self, key) < 0) {
                Py_DECREF(key);
                break;
            }
            result = key;
            break;
        }
        if (PyDict_GET_SIZE(self->main) == 0) { /* only the new key is resident */
            PyObject *key = od_pop_first(self->small);
            if (key != NULL && PyDict_DelItem(self->freq, key) < 0) {
                Py_CLEAR(key);
            }
            result = key;
            break;
        }
        PyObject *key = od_pop_first(self->main);
        if (key == NULL) {
            break;
        }
        PyObject *freq = PyDict_GetItemWithError(self->freq, key);
        long left = freq == NULL ? -1 : PyLong_AsLong(freq);
        if (left < 0) {
            Py_DECREF(key);
            break;
        }
        if (left) {
            if (set_freq(self, key, left - 1) < 0 || od_put(self->main, key) < 0) {
                Py_DECREF(key);
                break;
            }
            Py_DECREF(key);
            continue;
        }
        if (PyDict_DelItem(self->freq, key) < 0) {
            Py_DECREF(key);
            break;
        }
        result = key;
        break;
    }
    Py_XDECREF(newest);
    return result != NULL ? result : empty_error();
}

static PyObject *
S3FIFO_survivors(S3FIFO *self, PyObject *unused)
{
    (void)unused;
    PyObject *parts[] = {self->small, self->main, NULL};
    return od_keys_of(parts);
}

static PyObject *
S3FIFO_clear_policy(S3FIFO *self, PyObject *unused)
{
    (void)unused;
    if (od_clear(self->small) < 0 || od_clear(self->main) < 0 || od_clear(self->ghost) < 0) {
        return NULL;
    }
    PyDict_Clear(self->freq);
    Py_CLEAR(self->newest);
    Py_RETURN_NONE;
}

static Py_ssize_t
S3FIFO_len(S3FIFO *self)
{
    return PyDict_GET_SIZE(self->freq);
}

static int
S3FIFO_traverse(S3FIFO *self, visitproc visit, void *arg)
{
    Py_VISIT(self->small);
    Py_VISIT(self->main);
    Py_VISIT(self->ghost);
    Py_VISIT(self->freq);
    Py_VISIT(self->newest);
    return 0;
}

static int
S3FIFO_clear(S3FIFO *self)
{
    Py_CLEAR(self->small);
    Py_CLEAR(self->main);
    Py_CLEAR(self->ghost);
    Py_CLEAR(self->freq);
    Py_CLEAR(self->newest);
    return 0;
}

static void
S3FIFO_dealloc(S3FIFO *self)
{
    PyObject_GC_UnTrack(self);
    S3FIFO_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef S3FIFO_methods[] = {
    {"on_hit", (PyCFunction)S3FIFO_on_hit, METH_O, "Record an access to a resident key."},
    {"on_insert", (PyCFunction)S3FIFO_on_insert, METH_O, "Record a new resident key."},
    {"on_remove", (PyCFunction)S3FIFO_on_remove, METH_O, "Forget a removed key."},
    {"evict", (PyCFunction)S3FIFO_evict, METH_NOARGS, "Choose a victim, forget and return it."},
    {"survivors", (PyCFunction)S3FIFO_survivors, METH_NOARGS,
     "The keys: the small queue's, then main's, each oldest first."},
    {"clear", (PyCFunction)S3FIFO_clear_policy, METH_NOARGS, "Forget every key."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods S3FIFO_as_sequence = {.sq_length = (lenfunc)S3FIFO_len};

static PyTypeObject S3FIFO_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.S3FIFO",
    .tp_basicsize = sizeof(S3FIFO),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "S3FIFO(capacity=None): stores/eviction.py's S3FIFO in C.",
    .tp_new = S3FIFO_new,
    .tp_dealloc = (destructor)S3FIFO_dealloc,
    .tp_traverse = (traverseproc)S3FIFO_traverse,
    .tp_clear = (inquiry)S3FIFO_clear,
    .tp_methods = S3FIFO_methods,
    .tp_getset = atomic_getset,
    .tp_as_sequence = &S3FIFO_as_sequence,
};

/* ===================================================================== ARC */

typedef struct {
    PyObject_HEAD
    PyObject *t1, *t2, *b1, *b2; /* OrderedDicts */
    PyObject *newest;            /* the key just inserted, or NULL */
    Py_ssize_t capacity;
    double p;
    int from_b2;
} ARC;

static PyObject *
ARC_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", NULL};
    PyObject *capacity = Py_None;
    Py_ssize_t cap;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:ARC", kwlist, &capacity) ||
        parse_capacity(capacity, &cap) < 0) {
        return NULL;
    }
    ARC *self = (ARC *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->t1 = od_new();
    self->t2 = od_new();
    self->b1 = od_new();
    self->b2 = od_new();
    if (!self->t1 || !self->t2 || !self->b1 || !self->b2) {
        Py_DECREF(self);
        return NULL;
    }
    self->capacity = cap;
    return (PyObject *)self;
}

static PyObject *
ARC_on_hit(ARC *self, PyObject *key)
{
    int in = od_discard(self->t1, key);
    if (in < 0) {
        return NULL;
    }
    if (in) {
        return od_put(self->t2, key) < 0 ? NULL : Py_NewRef(Py_None);
    }
    in = PyDict_Contains(self->t2, key);
    if (in < 0 || (in && od_move_to_end(self->t2, key) < 0)) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
ARC_on_insert(ARC *self, PyObject *key)
{
    double b1 = (double)PyDict_GET_SIZE(self->b1), b2 = (double)PyDict_GET_SIZE(self->b2);
    self->from_b2 = 0;
    int in = PyDict_Contains(self->b1, key);
    if (in < 0) {
        return NULL;
    }
    if (in) {
        double step = b2 / b1 > 1.0 ? b2 / b1 : 1.0;
        double p = self->p + step;
        self->p = p < (double)self->capacity ? p : (double)self->capacity;
        if (PyObject_DelItem(self->b1, key) < 0 || od_put(self->t2, key) < 0) {
            return NULL;
        }
    }
    else if ((in = PyDict_Contains(self->b2, key)) != 0) {
        if (in < 0) {
            return NULL;
        }
        double step = b1 / b2 > 1.0 ? b1 / b2 : 1.0;
        double p = self->p - step;
        self->p = p > 0.0 ? p : 0.0;
        if (PyObject_DelItem(self->b2, key) < 0 || od_put(self->t2, key) < 0) {
            return NULL;
        }
        self->from_b2 = 1;
    }
    else if (od_put(self->t1, key) < 0) {
        return NULL;
    }
    Py_XSETREF(self->newest, Py_NewRef(key));
    Py_RETURN_NONE;
}

static PyObject *
ARC_on_remove(ARC *self, PyObject *key)
{
    int gone_t1 = od_discard(self->t1, key);
    if (gone_t1 < 0 || (gone_t1 == 0 && od_discard(self->t2, key) < 0)) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The newest key of an OrderedDict (new reference), or NULL with no error. */
static PyObject *
od_last(PyObject *od)
{
    PyObject *it = PyObject_CallMethodNoArgs(od, s_reversed);
    if (it == NULL) {
        return NULL;
    }
    PyObject *key = PyIter_Next(it);
    Py_DECREF(it);
    return key;
}

/* Pop the oldest key of ``from`` into ``ghost``; return it (new reference). */
static PyObject *
demote(PyObject *from, PyObject *ghost)
{
    PyObject *victim = od_pop_first(from);
    if (victim != NULL && od_put(ghost, victim) < 0) {
        Py_CLEAR(victim);
    }
    return victim;
}

static PyObject *
ARC_evict(ARC *self, PyObject *unused)
{
    (void)unused;
    Py_ssize_t t1 = PyDict_GET_SIZE(self->t1), t2 = PyDict_GET_SIZE(self->t2);
    if (t1 + t2 == 0) {
        return empty_error();
    }
    if (!self->capacity) {
        self->capacity = t1 + t2 - 1 > 1 ? t1 + t2 - 1 : 1;
    }
    Py_ssize_t c = self->capacity;
    PyObject *newest = self->newest;
    self->newest = NULL;
    PyObject *victim = NULL;
    int new_in_t1 = 0;
    if (newest != NULL) {
        int in = PyDict_Contains(self->t1, newest);
        if (in < 0) {
            goto done;
        }
        if (in) {
            PyObject *last = od_last(self->t1);
            if (last == NULL) {
                goto done;
            }
            new_in_t1 = PyObject_RichCompareBool(last, newest, Py_EQ);
            Py_DECREF(last);
            if (new_in_t1 < 0) {
                goto done;
            }
        }
    }
    Py_ssize_t old_t1 = t1 - new_in_t1; /* sizes as ARC sees them, before the insert */
    if (new_in_t1 && old_t1 + PyDict_GET_SIZE(self->b1) >= c) {
        if (old_t1 < c && PyDict_GET_SIZE(self->b1)) {
            PyObject *old = od_pop_first(self->b1);
            if (old == NULL) {
                goto done;
            }
            Py_DECREF(old);
        }
        else if (old_t1 > 0) { /* T1 alone fills the cache: drop its LRU, no ghost */
            victim = od_pop_first(self->t1);
            goto done;
        }
    }
    int take_t1 = old_t1 > 0 && ((double)old_t1 > self->p ||
                                 (self->from_b2 && old_t1 == (Py_ssize_t)self->p));
    int take_t2 = 0;
    if (!take_t1 && t2) {
        take_t2 = t2 > 1;
        if (!take_t2) {
            PyObject *first = od_first(self->t2);
            if (first == NULL) {
                goto done;
            }
            int same = newest == NULL ? 0 : PyObject_RichCompareBool(first, newest, Py_EQ);
            Py_DECREF(first);
            if (same < 0) {
                goto done;
            }
            take_t2 = !same;
        }
    }
    if (take_t1) {
        victim = demote(self->t1, self->b1);
    }
    else if (take_t2) {
        victim = demote(self->t2, self->b2);
    }
    else {
        victim = od_pop_first(PyDict_GET_SIZE(self->t1) ? self->t1 : self->t2);
    }
    if (victim == NULL) {
        goto done;
    }
    while (PyDict_GET_SIZE(self->b1) + PyDict_GET_SIZE(self->b2) > c) {
        Py_ssize_t n1 = PyDict_GET_SIZE(self->b1), n2 = PyDict_GET_SIZE(self->b2);
        PyObject *old = od_pop_first(n2 > n1 || !n1 ? self->b2 : self->b1);
        if (old == NULL) {
            Py_CLEAR(victim);
            goto done;
        }
        Py_DECREF(old);
    }
done:
    Py_XDECREF(newest);
    return victim != NULL ? victim : empty_error();
}

static PyObject *
ARC_survivors(ARC *self, PyObject *unused)
{
    (void)unused;
    PyObject *parts[] = {self->t1, self->t2, NULL};
    return od_keys_of(parts);
}

static PyObject *
ARC_clear_policy(ARC *self, PyObject *unused)
{
    (void)unused;
    if (od_clear(self->t1) < 0 || od_clear(self->t2) < 0 || od_clear(self->b1) < 0 ||
        od_clear(self->b2) < 0) {
        return NULL;
    }
    self->p = 0.0;
    Py_CLEAR(self->newest);
    Py_RETURN_NONE;
}

static Py_ssize_t
ARC_len(ARC *self)
{
    return PyDict_GET_SIZE(self->t1) + PyDict_GET_SIZE(self->t2);
}

static int
ARC_traverse(ARC *self, visitproc visit, void *arg)
{
    Py_VISIT(self->t1);
    Py_VISIT(self->t2);
    Py_VISIT(self->b1);
    Py_VISIT(self->b2);
    Py_VISIT(self->newest);
    return 0;
}

static int
ARC_clear(ARC *self)
{
    Py_CLEAR(self->t1);
    Py_CLEAR(self->t2);
    Py_CLEAR(self->b1);
    Py_CLEAR(self->b2);
    Py_CLEAR(self->newest);
    return 0;
}

static void
ARC_dealloc(ARC *self)
{
    PyObject_GC_UnTrack(self);
    ARC_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef ARC_methods[] = {
    {"on_hit", (PyCFunction)ARC_on_hit, METH_O, "Record an access to a resident key."},
    {"on_insert", (PyCFunction)ARC_on_insert, METH_O, "Record a new resident key."},
    {"on_remove", (PyCFunction)ARC_on_remove, METH_O, "Forget a removed key."},
    {"evict", (PyCFunction)ARC_evict, METH_NOARGS, "Choose a victim, forget and return it."},
    {"survivors", (PyCFunction)ARC_survivors, METH_NOARGS,
     "The keys: T1's, then T2's, each least recent first."},
    {"clear", (PyCFunction)ARC_clear_policy, METH_NOARGS, "Forget every key."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods ARC_as_sequence = {.sq_length = (lenfunc)ARC_len};

static PyTypeObject ARC_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cachewise._speedups.ARC",
    .tp_basicsize = sizeof(ARC),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ARC(capacity=None): stores/eviction.py's ARC in C.",
    .tp_new = ARC_new,
    .tp_dealloc = (destructor)ARC_dealloc,
    .tp_traverse = (traverseproc)ARC_traverse,
    .tp_clear = (inquiry)ARC_clear,
    .tp_methods = ARC_methods,
    .tp_getset = atomic_getset,
    .tp_as_sequence = &ARC_as_sequence,
};

/* ================================================================== module */

int
cw_policies_init(PyObject *module)
{
    if (od_init() < 0) {
        return -1;
    }
    if (gone == NULL) {
        gone = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
        s_move_to_end = PyUnicode_InternFromString("move_to_end");
        s_reversed = PyUnicode_InternFromString("__reversed__");
        s_add = PyUnicode_InternFromString("add");
        if (!gone || !s_move_to_end || !s_reversed || !s_add) {
            return -1;
        }
    }
    PyTypeObject *types[] = {&LRU_Type, &SIEVE_Type, &S3FIFO_Type, &ARC_Type};
    const char *names[] = {"LRU", "SIEVE", "S3FIFO", "ARC"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
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
