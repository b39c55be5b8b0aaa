/* OrderedDict helpers shared by the C eviction policies (_wtinylfu.c, _policies.c).
 *
 * The policies keep their queues in collections.OrderedDict, driven only through its
 * C methods: membership by PyDict_Contains (an OrderedDict is a dict), insertion and
 * deletion by PyObject_SetItem / PyObject_DelItem (which keep its order links), and
 * first/last keys by iteration. Each helper returns -1 (or NULL) with an exception set.
 */

#ifndef CW_ODICT_H
#define CW_ODICT_H

#include <Python.h>

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

static PyObject *od_popitem_name = NULL; /* "popitem", set by od_init() */

/* Call once from the module's init, before any other helper. */
static inline int
od_init(void)
{
    if (od_popitem_name == NULL) {
        od_popitem_name = PyUnicode_InternFromString("popitem");
    }
    return od_popitem_name == NULL ? -1 : 0;
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
    PyObject *item =
        PyObject_VectorcallMethod(od_popitem_name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (item == NULL) {
        return NULL;
    }
    PyObject *key = Py_NewRef(PyTuple_GET_ITEM(item, 0));
    Py_DECREF(item);
    return key;
}

static inline int
od_call_one(PyObject *od, PyObject *name, PyObject *key)
{
    PyObject *r = PyObject_CallMethodOneArg(od, name, key);
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

static inline PyObject *
od_new(void)
{
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL) {
        return NULL;
    }
    PyObject *od = PyObject_CallMethod(collections, "OrderedDict", NULL);
    Py_DECREF(collections);
    return od;
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
