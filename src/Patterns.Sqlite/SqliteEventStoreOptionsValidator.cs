using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;

namespace Patterns.Sqlite;

[OptionsValidator]
internal sealed partial class SqliteEventStoreOptionsDataValidator : IValidateOptions<SqliteEventStoreOptions>;

/// <summary>Validates <see cref="SqliteEventStoreOptions"/> and reports every problem at once.</summary>
internal sealed class SqliteEventStoreOptionsValidator : IValidateOptions<SqliteEventStoreOptions>
{
    public ValidateOptionsResult Validate(string? name, SqliteEventStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        var data = new SqliteEventStoreOptionsDataValidator().Validate(name, options);
        if (data.Failed)
        {
            errors.AddRange((data.Failures ?? []).Select(static f => "SqliteEventStoreOptions: " + f));
        }

        if (options.BusyTimeout < TimeSpan.Zero || options.BusyTimeout > TimeSpan.FromHours(1))
        {
            errors.Add($"SqliteEventStoreOptions.BusyTimeout must be between 0 and 1 hour (was {options.BusyTimeout}).");
        }

        if (options.PollInterval < TimeSpan.FromMilliseconds(1) || options.PollInterval > TimeSpan.FromDays(1))
        {
            errors.Add($"SqliteEventStoreOptions.PollInterval must be between 1 millisecond and 1 day (was {options.PollInterval}).");
        }

        if (options.ChangeCheckInterval != TimeSpan.Zero && (options.ChangeCheckInterval < TimeSpan.FromMilliseconds(1) || options.ChangeCheckInterval > TimeSpan.FromDays(1)))
        {
            errors.Add($"SqliteEventStoreOptions.ChangeCheckInterval must be zero (off) or between 1 millisecond and 1 day (was {options.ChangeCheckInterval}).");
        }

        if (!string.IsNullOrWhiteSpace(options.ConnectionString) && SqliteConnectionStrings.Check(options.ConnectionString) is { } problem)
        {
            errors.Add("SqliteEventStoreOptions.ConnectionString: " + problem);
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Throws an <see cref="ArgumentException"/> listing every problem of <paramref name="options"/>.</summary>
    public static void ThrowIfInvalid(SqliteEventStoreOptions options)
    {
        var result = new SqliteEventStoreOptionsValidator().Validate(null, options);
        if (result.Failed)
        {
            throw new ArgumentException("Invalid SQLite event store options: " + string.Join(" ", result.Failures ?? []), nameof(options));
        }
    }
}

/// <summary>Turns the configured connection string (or file path) into the ones the store opens.</summary>
internal static class SqliteConnectionStrings
{
    /// <summary>Returns why <paramref name="value"/> cannot be used, or null when it can.</summary>
    public static string? Check(string value)
    {
        SqliteConnectionStringBuilder builder;
        try
        {
            builder = Parse(value);
        }
        catch (ArgumentException ex)
        {
            return $"'{value}' is not a valid connection string: {ex.Message}";
        }

        if (string.IsNullOrWhiteSpace(builder.DataSource))
        {
            return "it names no database file (Data Source is empty).";
        }

        if (builder.Mode == SqliteOpenMode.Memory || builder.DataSource.Trim() == ":memory:")
        {
            return "in-memory SQLite databases are not supported; use a file (or the in-memory event store for tests).";
        }

        if (builder.Mode == SqliteOpenMode.ReadOnly)
        {
            return "a read-only database cannot store events (Mode=ReadOnly).";
        }

        return null;
    }

    /// <summary>Parses a connection string, or a file path when it contains no '='.</summary>
    public static SqliteConnectionStringBuilder Parse(string value) =>
        value.Contains('=', StringComparison.Ordinal)
            ? new SqliteConnectionStringBuilder(value)
            : new SqliteConnectionStringBuilder { DataSource = value };

    /// <summary>The connection string of the store's own connections: no driver pooling (the store keeps its connections open), a private cache, the busy timeout applied.</summary>
    public static string ForStore(SqliteEventStoreOptions options)
    {
        var builder = Parse(options.ConnectionString);
        builder.Pooling = false;
        builder.Cache = SqliteCacheMode.Private; // a shared cache would make readers and the writer lock each other out
        builder.DefaultTimeout = Math.Max(1, (int)Math.Ceiling(options.BusyTimeout.TotalSeconds));
        return builder.ToString();
    }
}
