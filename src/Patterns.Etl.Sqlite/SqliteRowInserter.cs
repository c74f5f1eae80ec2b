using System.Globalization;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Patterns.Etl;

/// <summary>
/// Inserts rows with two prepared statements, one of <c>RowsPerStatement</c> rows and one of a single row, bound by
/// index through SQLite's API (no parameter objects, no boxing). Runs inside the caller's transaction.
/// </summary>
internal sealed class SqliteRowInserter<T> : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly Binder[] _binders;
    private readonly int _rowsPerStatement;
    private readonly sqlite3_stmt _many;
    private readonly sqlite3_stmt _one;

    /// <param name="connection">The open connection.</param>
    /// <param name="insertPrefix">The statement up to <c>VALUES</c>, naming the schema's columns (and the flag's last).</param>
    /// <param name="schema">The columns bound.</param>
    /// <param name="rowsPerStatement">Rows per multi-row statement.</param>
    /// <param name="flag">A boolean bound after the schema's columns (the staging table's delete marker), or <see langword="null"/>.</param>
    public SqliteRowInserter(SqliteConnection connection, string insertPrefix, EtlSchema<T> schema, int rowsPerStatement, Func<T, bool>? flag = null)
    {
        _connection = connection;
        var binders = schema.Columns.Select(Binder.For).ToList();
        if (flag is not null)
        {
            binders.Add(Binder.ForFlag(flag));
        }

        _binders = [.. binders];
        _rowsPerStatement = Math.Max(1, Math.Min(rowsPerStatement, 32_766 / _binders.Length));
        _many = Prepare(insertPrefix + SqliteText.Values(_rowsPerStatement, _binders.Length));
        _one = Prepare(insertPrefix + SqliteText.Values(1, _binders.Length));
    }

    public void Insert(ReadOnlySpan<T> rows)
    {
        var i = 0;
        for (; i + _rowsPerStatement <= rows.Length; i += _rowsPerStatement)
        {
            var index = 1;
            for (var r = 0; r < _rowsPerStatement; r++)
            {
                var record = rows[i + r];
                foreach (var binder in _binders)
                {
                    binder.Bind(_many, index++, record);
                }
            }

            Step(_many);
        }

        for (; i < rows.Length; i++)
        {
            var index = 1;
            foreach (var binder in _binders)
            {
                binder.Bind(_one, index++, rows[i]);
            }

            Step(_one);
        }
    }

    public void Dispose()
    {
        _many.Dispose();
        _one.Dispose();
    }

    private sqlite3_stmt Prepare(string sql)
    {
        var rc = raw.sqlite3_prepare_v2(_connection.Handle, sql, out var statement);
        return rc == raw.SQLITE_OK ? statement : throw Error(rc);
    }

    private void Step(sqlite3_stmt statement)
    {
        var rc = raw.sqlite3_step(statement);
        raw.sqlite3_reset(statement);
        if (rc != raw.SQLITE_DONE)
        {
            throw Error(rc);
        }
    }

    private SqliteException Error(int rc) => new(raw.sqlite3_errmsg(_connection.Handle).utf8_to_string(), rc);

    private abstract class Binder
    {
        public static Binder For(EtlColumn<T> column) => column.Type switch
        {
            EtlColumnType.Int32 => new Integer(column.Getter<int>()),
            EtlColumnType.Int64 => new Long(column.Getter<long>()),
            EtlColumnType.Boolean => new Flag(column.Getter<bool>()),
            EtlColumnType.Double => new Real(column.Getter<double>()),
            EtlColumnType.Decimal => new Number(column.Getter<decimal>()),
            EtlColumnType.DateTime => new Time(column.Getter<DateTime>()),
            EtlColumnType.Guid => new Id(column.Getter<Guid>()),
            _ => new Text(column.Getter<string?>()),
        };

        public static Binder ForFlag(Func<T, bool> get) => new Flag(get);

        public abstract void Bind(sqlite3_stmt statement, int index, T record);

        private sealed class Integer(Func<T, int> get) : Binder
        {
            public override void Bind(sqlite3_stmt statement, int index, T record) => raw.sqlite3_bind_int64(statement, index, get(record));
        }

        private sealed class Long(Func<T, long> get) : Binder
        {
            public override void Bind(sqlite3_stmt statement, int index, T record) => raw.sqlite3_bind_int64(statement, index, get(record));
        }

        private sealed class Flag(Func<T, bool> get) : Binder
        {
            public override void Bind(sqlite3_stmt statement, int index, T record) => raw.sqlite3_bind_int64(statement, index, get(record) ? 1 : 0);
        }

        private sealed class Real(Func<T, double> get) : Binder
        {
            public override void Bind(sqlite3_stmt statement, int index, T record) => raw.sqlite3_bind_double(statement, index, get(record));
        }

        private sealed class Number(Func<T, decimal> get) : Binder
        {
            public override void Bind(sqlite3_stmt statement, int index, T record)
            {
                Span<char> text = stackalloc char[32];
                get(record).TryFormat(text, out var written, default, CultureInfo.InvariantCulture);
                raw.sqlite3_bind_text16(statement, index, text[..written]);
            }
        }

        private sealed class Time(Func<T, DateTime> get) : Binder
        {
            // The text form Microsoft.Data.Sqlite writes and reads back.
            public override void Bind(sqlite3_stmt statement, int index, T record)
            {
                Span<char> text = stackalloc char[32];
                get(record).TryFormat(text, out var written, "yyyy-MM-dd HH:mm:ss.FFFFFFF", CultureInfo.InvariantCulture);
                raw.sqlite3_bind_text16(statement, index, text[..written]);
            }
        }

        private sealed class Id(Func<T, Guid> get) : Binder
        {
            public override void Bind(sqlite3_stmt statement, int index, T record)
            {
                Span<char> text = stackalloc char[36];
                get(record).TryFormat(text, out var written, "D");
                raw.sqlite3_bind_text16(statement, index, text[..written]);
            }
        }

        private sealed class Text(Func<T, string?> get) : Binder
        {
            public override void Bind(sqlite3_stmt statement, int index, T record)
            {
                if (get(record) is { } value)
                {
                    raw.sqlite3_bind_text16(statement, index, value.AsSpan());
                }
                else
                {
                    raw.sqlite3_bind_null(statement, index);
                }
            }
        }
    }
}
