using System.Diagnostics;
using System.Globalization;
using Patterns.EventSourcing;

namespace Patterns.Conformance;

/// <summary>One append a process-kill test's child acknowledged (it printed the line after the append returned).</summary>
/// <param name="StreamId">The account stream.</param>
/// <param name="Version">The stream version the append returned.</param>
/// <param name="Count">How many deposits it appended.</param>
/// <param name="Sum">Their amounts' sum.</param>
public sealed record KillAck(string StreamId, long Version, int Count, long Sum);

/// <summary>
/// A running Patterns.CrashHost child of the process-kill tests. A background reader parses the lines the child prints
/// (<c>started</c>, <c>state &lt;SubscriptionState&gt;</c>, <c>ack ...</c>) as they come; the test waits on them with
/// <see cref="WaitUntilAsync"/> and kills the child with <see cref="Kill"/> (kill -9 of the process tree).
/// </summary>
public sealed class KillChild : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Task<string> _errors;
    private readonly Task _reader;
    private readonly Lock _gate = new();
    private readonly List<KillAck> _acks = [];
    private readonly Queue<string> _recent = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private SubscriptionState? _state;
    private bool _ready;
    private bool _started;
    private bool _ended;
    private bool _disposed;

    private KillChild(string name, Process process)
    {
        Name = name;
        _process = process;
        _errors = process.StandardError.ReadToEndAsync(CancellationToken.None);
        _reader = Task.Run(ReadAsync, CancellationToken.None);
    }

    /// <summary>Gets the name the test gave the child, for messages.</summary>
    public string Name { get; }

    /// <summary>Gets a value indicating whether the test killed the child.</summary>
    public bool Killed { get; private set; }

    /// <summary>Gets a value indicating whether a gated child printed <c>ready</c> (it waits for <see cref="GoAsync"/>).</summary>
    public bool Ready
    {
        get
        {
            lock (_gate)
            {
                return _ready;
            }
        }
    }

    /// <summary>Gets a value indicating whether the child printed <c>started</c>.</summary>
    public bool Started
    {
        get
        {
            lock (_gate)
            {
                return _started;
            }
        }
    }

    /// <summary>Gets the projection state the child printed last, or null before the first.</summary>
    public SubscriptionState? State
    {
        get
        {
            lock (_gate)
            {
                return _state;
            }
        }
    }

    /// <summary>Gets a value indicating whether the child last said it owns the projection (catching up or live).</summary>
    public bool IsOwner => State is SubscriptionState.CatchingUp or SubscriptionState.Live;

    /// <summary>Gets how many appends the child has acknowledged so far.</summary>
    public int AckCount
    {
        get
        {
            lock (_gate)
            {
                return _acks.Count;
            }
        }
    }

    /// <summary>Gets the appends the child acknowledged; complete once it is disposed.</summary>
    public IReadOnlyList<KillAck> Acknowledged
    {
        get
        {
            lock (_gate)
            {
                return [.. _acks];
            }
        }
    }

    private bool Ended
    {
        get
        {
            lock (_gate)
            {
                return _ended;
            }
        }
    }

    private Task Changed
    {
        get
        {
            lock (_gate)
            {
                return _changed.Task;
            }
        }
    }

    /// <summary>Starts Patterns.CrashHost (from the test's output directory) with <paramref name="arguments"/>.</summary>
    /// <param name="name">A name for messages.</param>
    /// <param name="arguments">The child's arguments: store kind, file or schema, role, seed, and <c>gated</c> for a child that waits for <see cref="GoAsync"/>.</param>
    /// <returns>The running child.</returns>
    public static KillChild Start(string name, params string[] arguments)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Patterns.CrashHost.dll"));
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        var process = Process.Start(start) ?? throw new InvalidOperationException("Could not start Patterns.CrashHost.");
        return new KillChild(name, process);
    }

    /// <summary>
    /// Waits until <paramref name="condition"/> holds, re-checking it whenever one of <paramref name="children"/> prints a line.
    /// </summary>
    /// <param name="children">The children whose output the condition reads.</param>
    /// <param name="condition">What to wait for.</param>
    /// <param name="what">The condition in words, for the failure message.</param>
    /// <param name="timeout">How long to wait at most.</param>
    /// <param name="cancellationToken">Ends the wait.</param>
    /// <returns>A task that completes when the condition holds.</returns>
    /// <exception cref="InvalidOperationException">A child that was not killed ended first.</exception>
    /// <exception cref="TimeoutException">The condition did not hold within <paramref name="timeout"/>.</exception>
    public static async Task WaitUntilAsync(IReadOnlyCollection<KillChild> children, Func<bool> condition, string what, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(children);
        ArgumentNullException.ThrowIfNull(condition);
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bounded.CancelAfter(timeout);
        while (true)
        {
            var signals = children.Select(c => c.Changed).ToArray();
            if (condition())
            {
                return;
            }

            foreach (var child in children.Where(c => c.Ended && !c.Killed))
            {
                await child._process.WaitForExitAsync(CancellationToken.None);
                throw new InvalidOperationException(
                    $"{child.Name} exited with code {child._process.ExitCode} while the test waited for {what}. Its error output: {await child._errors}");
            }

            try
            {
                await Task.WhenAny(signals).WaitAsync(bounded.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException(
                    $"Waited {timeout} for {what}; " + string.Join("; ", children.Select(c => $"{c.Name}: state {c.State?.ToString() ?? "none"}, {c.AckCount} acks")));
            }
        }
    }

    /// <summary>Waits until this child has acknowledged <paramref name="count"/> appends in all.</summary>
    /// <param name="count">The acknowledgement count.</param>
    /// <param name="timeout">How long to wait at most.</param>
    /// <param name="cancellationToken">Ends the wait.</param>
    /// <returns>A task that completes when they are acknowledged.</returns>
    public Task WaitForAcksAsync(int count, TimeSpan timeout, CancellationToken cancellationToken) =>
        WaitUntilAsync([this], () => AckCount >= count, $"{Name} to acknowledge {count} appends", timeout, cancellationToken);

    /// <summary>Lets a gated child start, once it is <see cref="Ready"/>.</summary>
    /// <param name="timeout">How long to wait for it to be ready at most.</param>
    /// <param name="cancellationToken">Ends the wait.</param>
    /// <returns>A task that completes when the child has been told to start.</returns>
    public async Task GoAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        await WaitUntilAsync([this], () => Ready, $"{Name} to be ready", timeout, cancellationToken);
        await _process.StandardInput.WriteLineAsync("go".AsMemory(), cancellationToken);
        await _process.StandardInput.FlushAsync(cancellationToken);
    }

    /// <summary>Kills the child and its process tree at once (SIGKILL), wherever it is.</summary>
    public void Kill()
    {
        Killed = true;
        _process.Kill(entireProcessTree: true);
    }

    /// <summary>Kills the child if it still runs, and waits until it is gone and its output read.</summary>
    /// <returns>A task that completes when the process has exited.</returns>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (!_process.HasExited)
        {
            Kill();
        }

        await _process.WaitForExitAsync(CancellationToken.None);
        await _reader;
        var errors = await _errors;
        _process.Dispose();
        if (Environment.GetEnvironmentVariable("PATTERNS_KILL_LOG_DIR") is { Length: > 0 } logs)
        {
            // For a soak or a diagnosis: every child's error output (where the crash host logs) and its last lines.
            Directory.CreateDirectory(logs);
            string[] recent;
            lock (_gate)
            {
                recent = [.. _recent];
            }

            var file = Path.Combine(logs, string.Concat(Name.Split(Path.GetInvalidFileNameChars())) + ".log");
            await File.WriteAllTextAsync(file, errors + Environment.NewLine + "-- last lines:" + Environment.NewLine + string.Join(Environment.NewLine, recent));
        }
    }

    /// <summary>
    /// Kills the child if it still runs and describes what it printed last (standard output) and its error output
    /// (where the crash host logs), for the message of a test that waited on it in vain.
    /// </summary>
    /// <returns>The description.</returns>
    public async Task<string> KillAndDescribeAsync()
    {
        await DisposeAsync();
        string[] recent;
        lock (_gate)
        {
            recent = [.. _recent];
        }

        var errors = await _errors;
        const int Tail = 6000;
        return $"{Name} printed last: [{string.Join(" | ", recent)}]; its error output{(errors.Length > Tail ? " (end)" : string.Empty)}: {(errors.Length > Tail ? errors[^Tail..] : errors)}";
    }

    private async Task ReadAsync()
    {
        while (await _process.StandardOutput.ReadLineAsync(CancellationToken.None) is { } line)
        {
            lock (_gate)
            {
                _recent.Enqueue(line);
                if (_recent.Count > 20)
                {
                    _recent.Dequeue();
                }
            }

            Apply(line);
        }

        Signal(() => _ended = true);
    }

    private void Apply(string line)
    {
        var parts = line.Split(' ');
        switch (parts)
        {
            case ["ready"]:
                Signal(() => _ready = true);
                break;
            case ["started"]:
                Signal(() => _started = true);
                break;
            case ["state", var state] when Enum.TryParse<SubscriptionState>(state, out var parsed):
                Signal(() => _state = parsed);
                break;

            // A line cut short by the kill does not parse and is not counted: the check only ever covers less.
            case ["ack", var stream, var version, var count, var sum]
                when long.TryParse(version, CultureInfo.InvariantCulture, out var v)
                    && int.TryParse(count, CultureInfo.InvariantCulture, out var c)
                    && long.TryParse(sum, CultureInfo.InvariantCulture, out var s):
                Signal(() => _acks.Add(new KillAck(stream, v, c, s)));
                break;
        }
    }

    private void Signal(Action change)
    {
        TaskCompletionSource changed;
        lock (_gate)
        {
            change();
            changed = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        changed.TrySetResult();
    }
}
