/* common/lazy_pq.c — the libpq functions snapworker calls, forwarded into libpq.so.5
 * loaded on first use (common/lazylib.h). Owns only this symbol list and the forwarders.
 * Each definition has libpq-fe.h's prototype, which is included, so the compiler checks
 * them. A function newly called from common/db.c must be added to both lists: otherwise
 * the link fails with an undefined reference, since libpq is not linked. */
#include <libpq-fe.h>

#include "common/lazylib_priv.h"

#define SYMS(X)                                                                          \
    X(PQclear) X(PQcmdTuples) X(PQconnectdbParams) X(PQconninfoFree) X(PQconninfoParse)  \
    X(PQerrorMessage) X(PQexec) X(PQexecParams) X(PQfinish) X(PQgetisnull) X(PQgetvalue) \
    X(PQntuples) X(PQresultErrorField) X(PQresultErrorMessage) X(PQresultStatus)          \
    X(PQsetNoticeProcessor) X(PQstatus) X(PQtransactionStatus)

LAZY_DEFINE(lazy_pq_def, "libpq.so.5", SYMS);

#define FN(name) LAZY_FN(LAZY_PQ, name)

void PQclear(PGresult *res) { FN(PQclear)(res); }
char *PQcmdTuples(PGresult *res) { return FN(PQcmdTuples)(res); }

PGconn *PQconnectdbParams(const char *const *keywords, const char *const *values,
                          int expand_dbname)
{
    return FN(PQconnectdbParams)(keywords, values, expand_dbname);
}

void PQconninfoFree(PQconninfoOption *connOptions) { FN(PQconninfoFree)(connOptions); }

PQconninfoOption *PQconninfoParse(const char *conninfo, char **errmsg)
{
    return FN(PQconninfoParse)(conninfo, errmsg);
}

char *PQerrorMessage(const PGconn *conn) { return FN(PQerrorMessage)(conn); }
PGresult *PQexec(PGconn *conn, const char *query) { return FN(PQexec)(conn, query); }

PGresult *PQexecParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
                       const char *const *paramValues, const int *paramLengths,
                       const int *paramFormats, int resultFormat)
{
    return FN(PQexecParams)(conn, command, nParams, paramTypes, paramValues, paramLengths,
                            paramFormats, resultFormat);
}

void PQfinish(PGconn *conn) { FN(PQfinish)(conn); }

int PQgetisnull(const PGresult *res, int tup_num, int field_num)
{
    return FN(PQgetisnull)(res, tup_num, field_num);
}

char *PQgetvalue(const PGresult *res, int tup_num, int field_num)
{
    return FN(PQgetvalue)(res, tup_num, field_num);
}

int PQntuples(const PGresult *res) { return FN(PQntuples)(res); }

char *PQresultErrorField(const PGresult *res, int fieldcode)
{
    return FN(PQresultErrorField)(res, fieldcode);
}

char *PQresultErrorMessage(const PGresult *res) { return FN(PQresultErrorMessage)(res); }
ExecStatusType PQresultStatus(const PGresult *res) { return FN(PQresultStatus)(res); }

PQnoticeProcessor PQsetNoticeProcessor(PGconn *conn, PQnoticeProcessor proc, void *arg)
{
    return FN(PQsetNoticeProcessor)(conn, proc, arg);
}

ConnStatusType PQstatus(const PGconn *conn) { return FN(PQstatus)(conn); }

PGTransactionStatusType PQtransactionStatus(const PGconn *conn)
{
    return FN(PQtransactionStatus)(conn);
}
