using System.Collections.Concurrent;
using Microsoft.Data.Sqlite;

namespace Patterns.Sqlite;

/// <summary>
/// A pool of read connections. WAL lets them read while the writer writes; each query sees one committed snapshot, so
/// a reader never sees part of a transaction. Reads hold a connection only for one page, never across a yield.
/// </summary>
internal sealed class SqliteReaders : IDisposable
{
    private readonly string _connectionString;
    private readonly SqliteEventStoreOptions _options;
    private readonly SqliteSql _sql;
    private readonly ConcurrentQueue<ReadSession> _idle = new();
    private readonly int _maxIdle;
    private int _idleCount;
    private volatile bool _disposed;

    public SqliteReaders(string connectionString, SqliteEventStoreOptions options, SqliteSql sql)
    {
        _sql = sql;
        _connectionString = connectionString;
        _options = options;
        _maxIdle = Math.Max(4, Environment.ProcessorCount * 2);
    }

    /// <summary>Takes an idle session, or opens a new connection.</summary>
    public ReadSession Rent()
    {
        ObjectDisposedException.ThrowIf(_disposed, typeof(SqliteEventStore));
        if (_idle.TryDequeue(out var session))
        {
            Interlocked.Decrement(ref _idleCount);
            return session;
        }

        return new ReadSession(SqliteDatabase.OpenConnection(_connectionString, _options), _sql);
    }

    /// <summary>Returns a session for reuse (or closes it when the pool is full or closed).</summary>
    public void Return(ReadSession session)
    {
        if (!_disposed)
        {
            if (Interlocked.Increment(ref _idleCount) <= _maxIdle)
            {
                _idle.Enqueue(session);
                if (_disposed)
                {
                    Drain();
                }

                return;
            }

            Interlocked.Decrement(ref _idleCount);
        }

        session.Dispose();
    }

    public void Dispose()
    {
        _disposed = true;
        Drain();
    }

    private void Drain()
    {
        while (_idle.TryDequeue(out var session))
        {
            session.Dispose();
        }
    }
}

/// <summary>One read connection with its prepared commands, keyed by their SQL.</summary>
internal sealed class ReadSession(SqliteConnection connection, SqliteSql sql) : IDisposable
{
    /// <summary>Gets the store's statements.</summary>
    public SqliteSql Sql { get; } = sql;

    private readonly Dictionary<string, SqliteCommand> _commands = new(StringComparer.Ordinal);

    /// <summary>Gets the command for <paramref name="sql"/>, prepared on first use; set its parameters by index.</summary>
    public SqliteCommand Command(string sql, params ReadOnlySpan<string> parameters)
    {
        if (!_commands.TryGetValue(sql, out var command))
        {
            command = SqliteRows.Command(connection, sql, parameters);
            _commands.Add(sql, command);
        }

        return command;
    }

    /// <summary>Creates a one-off command (for filtered reads whose text varies).</summary>
    public SqliteCommand OneOff(string sql, params ReadOnlySpan<string> parameters) => SqliteRows.Command(connection, sql, parameters);

    public void Dispose()
    {
        foreach (var command in _commands.Values)
        {
            command.Dispose();
        }

        connection.Dispose();
    }
}
