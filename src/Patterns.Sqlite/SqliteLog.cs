using Microsoft.Extensions.Logging;

namespace Patterns.Sqlite;

internal static partial class SqliteLog
{
    [LoggerMessage(EventId = 4101, Level = LogLevel.Information, Message = "SQLite event store opened '{DataSource}' (tables '{Prefix}*', WAL, synchronous=FULL) at head position {Head}.")]
    public static partial void Opened(ILogger logger, string dataSource, string prefix, long head);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Error, Message = "A SQLite event store transaction of {Writes} write(s) failed and was rolled back; each of them fails.")]
    public static partial void CommitFailed(ILogger logger, Exception exception, int writes);

    [LoggerMessage(EventId = 4103, Level = LogLevel.Warning, Message = "Rolling back a failed SQLite event store transaction failed.")]
    public static partial void RollbackFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4104, Level = LogLevel.Warning, Message = "The SQLite database was busy (locked by another connection or process) for a transaction of {Writes} write(s); nothing of it was stored, and it runs again in {Delay} (attempt {Attempt}).")]
    public static partial void Busy(ILogger logger, Exception exception, int writes, TimeSpan delay, int attempt);

    [LoggerMessage(EventId = 4105, Level = LogLevel.Warning, Message = "Checking the SQLite database for other connections' commits failed; the check opens a new connection in {Interval} (waiters still wake at the poll interval).")]
    public static partial void ChangeWatchFailed(ILogger logger, Exception exception, TimeSpan interval);
}
