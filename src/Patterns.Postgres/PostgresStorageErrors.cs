using Npgsql;
using Patterns.Storage;

namespace Patterns.Postgres;

/// <summary>
/// PostgreSQL's part of <see cref="StorageErrors"/>: a deadlock (40P01) or serialization failure (40001) aborted the
/// transaction to resolve a conflict, so it is a <see cref="StorageErrorKind.Conflict"/> that is safe to run again.
/// Other driver errors are left to the kernel's rules (Npgsql's <see cref="NpgsqlException.IsTransient"/>).
/// </summary>
internal sealed class PostgresStorageErrors : IStorageErrorClassifier
{
    public static readonly PostgresStorageErrors Instance = new();

    public StorageErrorKind? Classify(Exception exception) =>
        exception is PostgresException { SqlState: PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure }
            ? StorageErrorKind.Conflict
            : null;

    /// <summary>Whether PostgreSQL rolled the transaction back to resolve a conflict (see <see cref="StorageErrorKind.Conflict"/>).</summary>
    public static bool IsConflict(Exception exception) => StorageErrors.Classify(exception, Instance) == StorageErrorKind.Conflict;
}

/// <summary>The store classifies its driver's errors for <see cref="StorageErrors"/>.</summary>
public sealed partial class PostgresEventStore : IStorageErrorClassifier
{
    /// <inheritdoc />
    StorageErrorKind? IStorageErrorClassifier.Classify(Exception exception) => PostgresStorageErrors.Instance.Classify(exception);
}
