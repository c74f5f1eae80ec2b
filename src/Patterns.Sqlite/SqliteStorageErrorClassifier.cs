using Microsoft.Data.Sqlite;
using Patterns.Storage;
using SQLitePCL;

namespace Patterns.Sqlite;

/// <summary>
/// SQLite's part of <see cref="StorageErrors"/>, by the primary result code of a <see cref="SqliteException"/>
/// (<c>SqliteErrorCode &amp; 0xFF</c>, so extended codes count as their primary one). The database could not serve
/// the call now, and may later: SQLITE_BUSY (5) and SQLITE_LOCKED (6) (another connection held the lock past the busy
/// timeout), SQLITE_NOMEM (7), SQLITE_IOERR (10), SQLITE_FULL (13, the disk), SQLITE_CANTOPEN (14, the file or its
/// folder cannot be opened now) and SQLITE_PROTOCOL (15, a lock race) are <see cref="StorageErrorKind.Transient"/>.
/// Other codes (a constraint, a missing table, a corrupt file) are left to the kernel's rules, which deem them permanent.
/// </summary>
/// <remarks>
/// The SQLite store implements <see cref="IStorageErrorClassifier"/> with it, and
/// <c>AddEventSourcing(es =&gt; es.UseSqlite(...))</c> registers it as an <see cref="IStorageErrorClassifier"/> service, for
/// the components that ask the registered classifiers (ETL lookups tell a dimension that is down from a bad row with
/// them). Register it yourself (<c>services.AddSingleton&lt;IStorageErrorClassifier&gt;(SqliteStorageErrorClassifier.Instance)</c>)
/// when SQLite is used without the event store.
/// </remarks>
public sealed class SqliteStorageErrorClassifier : IStorageErrorClassifier
{
    private SqliteStorageErrorClassifier()
    {
    }

    /// <summary>Gets the classifier.</summary>
    public static SqliteStorageErrorClassifier Instance { get; } = new();

    /// <inheritdoc />
    public StorageErrorKind? Classify(Exception exception) =>
        exception is SqliteException sqlite && (sqlite.SqliteErrorCode & 0xFF) is raw.SQLITE_BUSY or raw.SQLITE_LOCKED or raw.SQLITE_NOMEM
            or raw.SQLITE_IOERR or raw.SQLITE_FULL or raw.SQLITE_CANTOPEN or raw.SQLITE_PROTOCOL
            ? StorageErrorKind.Transient
            : null;

    /// <summary>Whether another connection held the database's lock past the busy timeout (SQLITE_BUSY or SQLITE_LOCKED, extended codes included): a transaction that failed so stored nothing, and may run again.</summary>
    internal static bool IsBusy(SqliteException exception) => (exception.SqliteErrorCode & 0xFF) is raw.SQLITE_BUSY or raw.SQLITE_LOCKED;
}

/// <summary>The store classifies its driver's errors for <see cref="StorageErrors"/>.</summary>
public sealed partial class SqliteEventStore : IStorageErrorClassifier
{
    /// <inheritdoc />
    StorageErrorKind? IStorageErrorClassifier.Classify(Exception exception) => SqliteStorageErrorClassifier.Instance.Classify(exception);
}
