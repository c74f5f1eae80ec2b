using Microsoft.Extensions.Logging;

namespace Patterns.Gateway.Tests;

/// <summary>Records the gateway's log events (id and text) so a test can wait for one, signalled rather than polled.</summary>
internal sealed class GatewayLogs : ILoggerProvider, ILogger
{
    private readonly Lock _lock = new();
    private readonly List<(int Id, string Text)> _events = [];
    private readonly List<(Func<int, string, bool> Match, TaskCompletionSource<string> Signal)> _waiters = [];

    public ILogger CreateLogger(string categoryName) => this;

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel))
        {
            return;
        }

        var text = formatter(state, exception) + (exception is null ? string.Empty : " " + exception);
        lock (_lock)
        {
            _events.Add((eventId.Id, text));
            foreach (var waiter in _waiters.Where(w => w.Match(eventId.Id, text)).ToList())
            {
                waiter.Signal.TrySetResult(text);
                _waiters.Remove(waiter);
            }
        }
    }

    /// <summary>Gets the texts of every event logged so far.</summary>
    public IReadOnlyList<string> Messages
    {
        get
        {
            lock (_lock)
            {
                return _events.Select(e => e.Text).ToList();
            }
        }
    }

    /// <summary>The texts of the events logged so far with <paramref name="eventId"/>.</summary>
    public IReadOnlyList<string> Of(int eventId)
    {
        lock (_lock)
        {
            return _events.Where(e => e.Id == eventId).Select(e => e.Text).ToList();
        }
    }

    /// <summary>The first event with <paramref name="eventId"/>, once it is logged; fails after <see cref="Waits.Bound"/>.</summary>
    public Task<string> WaitForAsync(int eventId) => WaitForAsync((id, _) => id == eventId);

    /// <summary>The first event whose text contains <paramref name="text"/>, once it is logged; fails after <see cref="Waits.Bound"/>.</summary>
    public Task<string> WaitForAsync(string text) => WaitForAsync((_, t) => t.Contains(text, StringComparison.Ordinal));

    private Task<string> WaitForAsync(Func<int, string, bool> match)
    {
        TaskCompletionSource<string> signal;
        lock (_lock)
        {
            foreach (var (id, text) in _events)
            {
                if (match(id, text))
                {
                    return Task.FromResult(text);
                }
            }

            signal = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((match, signal));
        }

        return signal.Task.WaitAsync(Waits.Bound, TestContext.Current.CancellationToken);
    }

    public void Dispose()
    {
    }
}
