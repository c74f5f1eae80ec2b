using Microsoft.Extensions.Logging;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>A logger provider that lets a test wait for a log event by id, without sleeping.</summary>
public sealed class LogCapture : ILoggerProvider
{
    private readonly Lock _gate = new();
    private readonly HashSet<int> _seen = [];
    private readonly List<(int EventId, TaskCompletionSource Signal)> _waiters = [];

    public Task WaitForAsync(int eventId)
    {
        var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (_seen.Contains(eventId))
            {
                return Task.CompletedTask;
            }

            _waiters.Add((eventId, signal));
        }

        return signal.Task;
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void Dispose()
    {
    }

    private void Record(int eventId)
    {
        List<TaskCompletionSource> ready = [];
        lock (_gate)
        {
            _seen.Add(eventId);
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].EventId == eventId)
                {
                    ready.Add(_waiters[i].Signal);
                    _waiters.RemoveAt(i);
                }
            }
        }

        ready.ForEach(r => r.TrySetResult());
    }

    private sealed class Logger(LogCapture owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.Record(eventId.Id);
    }
}
