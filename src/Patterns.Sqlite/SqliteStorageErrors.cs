using Microsoft.Data.Sqlite;
using Patterns.Storage;
using SQLitePCL;

namespace Patterns.Sqlite;

/// <summary>
/// SQLite's part of <see cref="StorageErrors"/>: SQLITE_BUSY and SQLITE_LOCKED (with their extended codes) mean another
/// connection held the lock past the busy timeout, so the call may succeed later (<see cref="StorageErrorKind.Transient"/>).
/// Other driver errors are left to the kernel's rules.
/// </summary>
internal sealed class SqliteStorageErrors : IStorageErrorClassifier
{
    public static readonly SqliteStorageErrors Instance = new();

    public StorageErrorKind? Classify(Exception exception) =>
        exception is SqliteException sqlite && (sqlite.SqliteErrorCode & 0xFF) is raw.SQLITE_BUSY or raw.SQLITE_LOCKED
            ? StorageErrorKind.Transient
            : null;
}

/// <summary>The store classifies its driver's errors for <see cref="StorageErrors"/>.</summary>
public sealed partial class SqliteEventStore : IStorageErrorClassifier
{
    /// <inheritdoc />
    StorageErrorKind? IStorageErrorClassifier.Classify(Exception exception) => SqliteStorageErrors.Instance.Classify(exception);
}
