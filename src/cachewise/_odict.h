/* OrderedDict helpers shared by the C eviction policies (_wtinylfu.c, _policies.c, _duel.c).
 *
 * The policies keep their queues in collections.OrderedDict, driven only through its
 * C methods: membership by PyDict_Contains (an OrderedDict is a dict), insertion and
 * deletion by PyObject_SetItem / PyObject_DelItem (which keep its order links), and
 * popitem / move_to_end through their method descriptors, looked up once (a lookup by
 * name on every call showed in profiles). Each helper returns -1 (or NULL) with an
 * exception set. Call od_init() from the module's init before any other helper.
 */

#ifndef CW_ODICT_H
#define CW_ODICT_H

#include <Python.h>

static PyObject *od_type = NULL;        /* collections.OrderedDict */
static PyObject *od_popitem = NULL;     /* OrderedDict.popitem (a method descriptor) */
static PyObject *od_move_to_end_m = NULL; /* OrderedDict.move_to_end */

static inline int
od_init(void)
{
    if (od_type != NULL) {
        return 0;
    }
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL) {
        return -1;
    }
    od_type = PyObject_GetAttrString(collections, "OrderedDict");
    Py_DECREF(collections);
    if (od_type == NULL) {
        return -1;
    }
    od_popitem = PyObject_GetAttrString(od_type, "popitem");
    od_move_to_end_m = PyObject_GetAttrString(od_type, "move_to_end");
    return od_popitem == NULL || od_move_to_end_m == NULL ? -1 : 0;
}

static inline PyObject *
od_new(void)
{
    return PyObject_CallNoArgs(od_type);
}

static inline int
od_put(PyObject *od, PyObject *key)
{
    return PyObject_SetItem(od, key, Py_None);
}

/* The oldest key (a new reference), or NULL with no error when empty. */
static inline PyObject *
od_first(PyObject *od)
{
    PyObject *it = PyObject_GetIter(od);
    if (it == NULL) {
        return NULL;
    }
    PyObject *key = PyIter_Next(it);
    Py_DECREF(it);
    return key;
}

/* Remove and return the oldest key (new reference); NULL if empty or on error.
 * popitem(False), not an iterator: an iterator is a new GC-tracked object per call,
 * and the collections it triggers cost more than the pop itself. */
static inline PyObject *
od_pop_first(PyObject *od)
{
    if (PyDict_GET_SIZE(od) == 0) {
        return NULL;
    }
    PyObject *args[2] = {od, Py_False};
    PyObject *item = PyObject_Vectorcall(od_popitem, args, 2, NULL);
    if (item == NULL) {
        return NULL;
    }
    PyObject *key = Py_NewRef(PyTuple_GET_ITEM(item, 0));
    Py_DECREF(item);
    return key;
}

/* od.move_to_end(key): KeyError if the key is not there. */
static inline int
od_move_to_end(PyObject *od, PyObject *key)
{
    PyObject *args[2] = {od, key};
    PyObject *r = PyObject_Vectorcall(od_move_to_end_m, args, 2, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* 1 if ``key`` was there and is gone now, 0 if it was not there, -1 on error. */
static inline int
od_discard(PyObject *od, PyObject *key)
{
    int in = PyDict_Contains(od, key);
    if (in <= 0) {
        return in;
    }
    return PyObject_DelItem(od, key) < 0 ? -1 : 1;
}

/* A new list of the keys of each OrderedDict in turn (``parts`` ends with NULL). */
static inline PyObject *
od_keys_of(PyObject **parts)
{
    PyObject *out = PyList_New(0);
    for (; out != NULL && *parts != NULL; parts++) {
        PyObject *keys = PySequence_List(*parts);
        if (keys == NULL) {
            Py_CLEAR(out);
            break;
        }
        int rc = PyList_SetSlice(out, PyList_GET_SIZE(out), PyList_GET_SIZE(out), keys);
        Py_DECREF(keys);
        if (rc < 0) {
            Py_CLEAR(out);
        }
    }
    return out;
}

static inline int
od_clear(PyObject *od)
{
    PyObject *r = PyObject_CallMethod(od, "clear", NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

#endif
