using System.Data.Common;

namespace Patterns.Storage;

/// <summary>What retrying a failed storage call can achieve.</summary>
public enum StorageErrorKind
{
    /// <summary>Retrying fails the same way: a refused append, a bad argument, a missing schema, a bug.</summary>
    Permanent,

    /// <summary>
    /// The store could not be reached or was briefly unable to serve (a dropped connection, a timeout, a busy or locked
    /// database): the call may succeed later. For a write whose reply was lost, whether it took effect is unknown, so
    /// retry it only when it is idempotent (an append with the same event ids is).
    /// </summary>
    Transient,

    /// <summary>
    /// The database aborted the transaction to resolve a conflict with another one (a deadlock, a serialization
    /// failure): nothing of it was stored, and running the whole transaction again is safe.
    /// </summary>
    Conflict,
}

/// <summary>A store's driver-specific part of <see cref="StorageErrors.Classify"/>.</summary>
public interface IStorageErrorClassifier
{
    /// <summary>Classifies an error of the store's driver.</summary>
    /// <param name="exception">The error.</param>
    /// <returns>Its kind, or <see langword="null"/> to leave it to the kernel's rules.</returns>
    StorageErrorKind? Classify(Exception exception);
}

/// <summary>
/// The one place that decides whether a storage error is worth retrying. The kernel's rules come first: the store
/// SPI's own outcomes (<see cref="WrongExpectedVersionException"/>, <see cref="StreamDeletedException"/>,
/// <see cref="DuplicateEventException"/>, <see cref="DuplicateMessageException"/>, <see cref="CheckpointConflictException"/>,
/// <see cref="LeaseLostException"/>), cancellation, argument errors, a disposed object and an unsupported call are
/// permanent. Then the store's <see cref="IStorageErrorClassifier"/> decides for its driver's errors. Patterns.Sqlite's
/// makes SQLite's busy, locked, out-of-memory, I/O-error, disk-full, cannot-open and lock-protocol codes transient.
/// Patterns.Postgres's deems a deadlock and a serialization failure a conflict, and these transient: a connection
/// exception, insufficient resources, a shutdown or a server still starting, a statement the server cancelled (its
/// statement timeout), and any other Npgsql error the driver reports transient. Each leaves the rest of its driver's
/// errors to the rules that follow. Otherwise a <see cref="TimeoutException"/>, or a <see cref="DbException"/> whose driver reports
/// <see cref="DbException.IsTransient"/>, is transient, and anything else permanent.
/// </summary>
public static class StorageErrors
{
    /// <summary>Classifies a storage error.</summary>
    /// <param name="exception">The error a store threw.</param>
    /// <param name="driver">The store's classifier (a store that has one implements <see cref="IStorageErrorClassifier"/>), or <see langword="null"/>.</param>
    /// <returns>What retrying can achieve.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="exception"/> is null.</exception>
    public static StorageErrorKind Classify(Exception exception, IStorageErrorClassifier? driver = null)
    {
        ArgumentNullException.ThrowIfNull(exception);
        if (exception is WrongExpectedVersionException or StreamDeletedException or DuplicateEventException or DuplicateMessageException
            or CheckpointConflictException or LeaseLostException or OperationCanceledException or ArgumentException
            or ObjectDisposedException or NotSupportedException)
        {
            return StorageErrorKind.Permanent;
        }

        if (driver?.Classify(exception) is { } kind)
        {
            return kind;
        }

        return exception is TimeoutException or DbException { IsTransient: true } ? StorageErrorKind.Transient : StorageErrorKind.Permanent;
    }

    /// <summary>Gets whether a storage call that failed with <paramref name="exception"/> may succeed when tried again (<see cref="StorageErrorKind.Transient"/> or <see cref="StorageErrorKind.Conflict"/>).</summary>
    /// <param name="exception">The error a store threw.</param>
    /// <param name="driver">The store's classifier, or <see langword="null"/>.</param>
    /// <returns>Whether a retry may succeed.</returns>
    public static bool IsRetryable(Exception exception, IStorageErrorClassifier? driver = null) =>
        Classify(exception, driver) != StorageErrorKind.Permanent;
}
