using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Patterns.PeerLinks.Tests;

/// <summary>Keeps every log line at warning or above, to assert that a refusal or a malformed frame was logged.</summary>
internal sealed class ListLogs : ILoggerProvider, ILogger
{
    private readonly TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ConcurrentQueue<string> Lines { get; } = new();

    public ILoggerFactory Factory => LoggerFactory.Create(b => b.AddProvider(this));

    public ILogger CreateLogger(string categoryName) => this;

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (IsEnabled(logLevel))
        {
            Lines.Enqueue(formatter(state, exception));
        }
    }

    /// <summary>Waits until a line containing <paramref name="text"/> is logged.</summary>
    public async Task<string> WaitForAsync(string text, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            if (Lines.FirstOrDefault(l => l.Contains(text, StringComparison.Ordinal)) is { } line)
            {
                return line;
            }

            await Task.Delay(10, cts.Token);
        }
    }

    public void Dispose()
    {
    }
}
