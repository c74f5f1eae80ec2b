using Npgsql;
using Patterns.Storage;

namespace Patterns.Postgres;

/// <summary>
/// PostgreSQL's part of <see cref="StorageErrors"/>, by the SQLSTATE of a <see cref="PostgresException"/>: a deadlock
/// (40P01) or serialization failure (40001) aborted the transaction to resolve a conflict, so it is a
/// <see cref="StorageErrorKind.Conflict"/> that is safe to run again; a connection exception (class 08), insufficient
/// resources (class 53: a full disk, out of memory, too many connections) and an administrator's or crash shutdown, or a
/// server still starting (57P01, 57P02, 57P03) are <see cref="StorageErrorKind.Transient"/>, and so is a statement the
/// server cancelled (57014, query_canceled: its <c>statement_timeout</c> passed, or an administrator cancelled it): the
/// statement was stopped, not refused, and may succeed later. A statement cancelled through the caller's own
/// <see cref="CancellationToken"/> is not: Npgsql reports that as an <see cref="OperationCanceledException"/> (the
/// 57014 inside), which the kernel's rules deem permanent before any classifier is asked. Any other
/// <see cref="NpgsqlException"/> (no server reply: a dropped connection, a timeout) is transient when Npgsql reports
/// <see cref="NpgsqlException.IsTransient"/>. Other errors are left to the kernel's rules.
/// </summary>
/// <remarks>
/// The PostgreSQL store implements <see cref="IStorageErrorClassifier"/> with it, and
/// <c>AddEventSourcing(es =&gt; es.UsePostgres(...))</c> registers it as an <see cref="IStorageErrorClassifier"/> service, for
/// the components that ask the registered classifiers (ETL lookups tell a dimension that is down from a bad row with
/// them). Register it yourself (<c>services.AddSingleton&lt;IStorageErrorClassifier&gt;(PostgresStorageErrorClassifier.Instance)</c>)
/// when PostgreSQL is used without the event store.
/// </remarks>
public sealed class PostgresStorageErrorClassifier : IStorageErrorClassifier
{
    private PostgresStorageErrorClassifier()
    {
    }

    /// <summary>Gets the classifier.</summary>
    public static PostgresStorageErrorClassifier Instance { get; } = new();

    /// <inheritdoc />
    public StorageErrorKind? Classify(Exception exception) => exception switch
    {
        PostgresException { SqlState: PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure } => StorageErrorKind.Conflict,
        PostgresException { SqlState: PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown or PostgresErrorCodes.CannotConnectNow or PostgresErrorCodes.QueryCanceled } => StorageErrorKind.Transient,
        PostgresException postgres when postgres.SqlState.StartsWith("08", StringComparison.Ordinal) || postgres.SqlState.StartsWith("53", StringComparison.Ordinal) => StorageErrorKind.Transient,
        PostgresException => null,
        NpgsqlException { IsTransient: true } => StorageErrorKind.Transient,
        _ => null,
    };

    /// <summary>Whether PostgreSQL rolled the transaction back to resolve a conflict (see <see cref="StorageErrorKind.Conflict"/>).</summary>
    internal static bool IsConflict(Exception exception) => StorageErrors.Classify(exception, Instance) == StorageErrorKind.Conflict;
}

/// <summary>The store classifies its driver's errors for <see cref="StorageErrors"/>.</summary>
public sealed partial class PostgresEventStore : IStorageErrorClassifier
{
    /// <inheritdoc />
    StorageErrorKind? IStorageErrorClassifier.Classify(Exception exception) => PostgresStorageErrorClassifier.Instance.Classify(exception);
}
