using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Patterns.Etl;

/// <summary>
/// How a holding stage (<c>DistinctBy</c>, <c>Aggregate</c>, <c>OrderBy</c>, a join's build side) goes on past its
/// budget: it spills rows to temporary files in a folder of the run's own, and finishes them after the source ends.
/// <c>DistinctBy</c>, <c>Aggregate</c> and the join partition rows by a hash of their key and write them with
/// System.Text.Json; <c>OrderBy</c> writes sorted runs through its schema.
/// </summary>
public sealed class EtlSpill
{
    /// <summary>Gets the default: spill under the system's temporary folder, rows written with public properties and fields.</summary>
    public static EtlSpill Default { get; } = new();

    /// <summary>Gets the setting that never spills: a stage past its byte budget fails the run with <see cref="EtlMemoryBudgetExceededException"/>.</summary>
    public static EtlSpill Off { get; } = new() { Enabled = false };

    /// <summary>Gets a value indicating whether the stage spills (<see langword="true"/>) or fails at its budget.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>
    /// Gets the folder under which each spilling stage makes its own folder (<c>patterns-etl-spill-*</c>), deleted when
    /// the stage ends, fails or is cancelled; the system's temporary folder by default.
    /// </summary>
    public string? TempDirectory { get; init; }

    /// <summary>
    /// Gets the serializer options for spilled rows. By default, reflection with public fields included (tuples keep their
    /// items) and NaN and the infinities allowed; under NativeAOT, pass options with a source-generated context for the row
    /// and result types. A spilled row must come back from JSON equal to what was written (no state outside its public
    /// properties and fields), and keys must compare by value.
    /// </summary>
    public JsonSerializerOptions? SerializerOptions { get; init; }

    /// <summary>Gets the number of files a spilling stage splits its overflow into (by a hash of the key); each is finished on its own, within the same budget.</summary>
    public int Partitions { get; init; } = 16;

    /// <summary>Gets what tests watch a spilling stage through: what each hash table held and each read-back read; <see langword="null"/> otherwise.</summary>
    internal Action<EtlSpillEvent>? Observer { get; init; }

    // The kernel's message serializer's choice: reflection where the application keeps it enabled; none under NativeAOT,
    // where a spill then fails with a clear error until SerializerOptions carries a source-generated context.
    internal static JsonSerializerOptions DefaultSerializerOptions { get; } = new()
    {
        IncludeFields = true,

        // A spilled row must come back equal: NaN and the infinities are written as "NaN", "Infinity", "-Infinity".
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        TypeInfoResolver = Patterns.Serialization.JsonMessageSerializer.ReflectionResolver() ?? JsonTypeInfoResolver.Combine(),
    };

    /// <summary>A stage spills only past its byte budget: <c>spill:</c> without <c>maxBytes:</c> would never take effect.</summary>
    internal static void RequireBudget(EtlSpill? spill, long? maxBytes, string stage)
    {
        if (spill is not null && maxBytes is null)
        {
            throw new ArgumentException($"{stage} was given spill: but no maxBytes: a stage spills only past its byte budget, and without one it holds every key in memory. Set maxBytes, or leave spill unset.", nameof(spill));
        }
    }

    internal void Validate(string parameter)
    {
        if (Partitions is < 2 or > 1024)
        {
            throw new ArgumentOutOfRangeException(parameter, Partitions, "EtlSpill.Partitions must be between 2 and 1,024.");
        }
    }
}

/// <summary>What a spilling stage did, for tests: <paramref name="What"/> is <c>table</c> (a hash table built, its rows and bytes), <c>probe</c> (a left file read, its rows), <c>split</c> (a partition split again; for <c>DistinctBy</c> and <c>Aggregate</c>, a pass that wrote two or more partitions, its <paramref name="Depth"/> the hash used) or <c>slices</c> (a partition that cannot be split, finished in slices). <c>DistinctBy</c> and <c>Aggregate</c> report a <c>table</c> as each pass (or slice) ends: the keys or groups it held and their bytes.</summary>
internal readonly record struct EtlSpillEvent(string What, int Depth, long Rows, long Bytes);

/// <summary>A holding stage could not write a row to its spill file, or read it back.</summary>
public sealed class EtlSpillException : InvalidOperationException
{
    /// <summary>Initializes a new instance of the <see cref="EtlSpillException"/> class.</summary>
    public EtlSpillException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlSpillException"/> class.</summary>
    /// <param name="message">What happened.</param>
    public EtlSpillException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlSpillException"/> class.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The serializer's error.</param>
    public EtlSpillException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Gets the stage that spilled: <c>DistinctBy</c>, <c>Aggregate</c> or <c>Join</c>.</summary>
    public string Stage { get; init; } = string.Empty;

    /// <summary>Gets the type that could not be written or read.</summary>
    public Type? RowType { get; init; }
}

/// <summary>One spilling stage's files: a folder of its own, deleted when the stage ends or the run does (success, failure or cancellation).</summary>
internal sealed class EtlSpillSession : IDisposable
{
    private readonly EtlRun _run;
    private readonly string _parameter;
    private readonly JsonSerializerOptions _json;
    private readonly string _directory;
    /// <summary>Each live spill folder holds this file open, unshared; a folder whose lock file opens is left from a run that crashed.</summary>
    private const string LockName = "lock";
    private const string Prefix = "patterns-etl-spill-";

    /// <summary>
    /// A folder is made under its name with this suffix, and renamed once its lock file is held: on Unix, .NET opens a
    /// file and locks it in two steps, and a sweep in between would find the lock free and delete a live folder.
    /// </summary>
    internal const string CreatingSuffix = ".creating";

    /// <summary>A folder without a lock file, or still being made, may be one a live run is making: it is swept only past this age.</summary>
    private static readonly TimeSpan UnlockedAge = TimeSpan.FromHours(1);

    private readonly HashSet<IDisposable> _open = [];
    private readonly Action<EtlSpillEvent>? _observer;
    private FileStream? _lock;
    private bool _created;
    private int _next;

    public EtlSpillSession(EtlRun run, string stage, string parameter, EtlSpill spill)
    {
        _run = run;
        Stage = stage;
        _parameter = parameter;
        _json = spill.SerializerOptions ?? EtlSpill.DefaultSerializerOptions;
        Partitions = spill.Partitions;
        _observer = spill.Observer;
        _directory = Path.Combine(spill.TempDirectory ?? Path.GetTempPath(), Prefix + Guid.NewGuid().ToString("N"));
        run.Own(this);
    }

    public string Stage { get; }

    public int Partitions { get; }

    /// <summary>Gets the number of files written so far.</summary>
    public int FilesWritten => _next;

    /// <summary>Tells the test watching this stage (through <see cref="EtlSpill.Observer"/>) what it did.</summary>
    public void Observe(string what, int depth, long rows, long bytes) => _observer?.Invoke(new EtlSpillEvent(what, depth, rows, bytes));

    public JsonTypeInfo<TValue> TypeInfo<TValue>()
    {
        try
        {
            return (JsonTypeInfo<TValue>)_json.GetTypeInfo(typeof(TValue));
        }
        catch (Exception ex) when (ex is NotSupportedException or InvalidOperationException or ArgumentException)
        {
            throw Failed<TValue>("write", ex);
        }
    }

    public EtlSpillWriter<TValue> Create<TValue>(JsonTypeInfo<TValue> type)
    {
        var writer = new EtlSpillWriter<TValue>(this, NewFile(".spill"), type);
        _open.Add(writer);
        return writer;
    }

    /// <summary>
    /// The path of a new file in the session's folder, made (with its lock file, after sweeping the folders crashed runs
    /// left beside it) on the first call. The caller creates the file; one it keeps open goes to <see cref="Opened"/>.
    /// </summary>
    public string NewFile(string extension)
    {
        if (!_created)
        {
            CreateLocked();
            _created = true;
            Sweep(Path.GetDirectoryName(_directory)!);
        }

        return Path.Combine(_directory, (_next++).ToString(CultureInfo.InvariantCulture) + extension);
    }

    /// <summary>Makes the session's folder with its lock file held: the folder appears under its swept name only once it is.</summary>
    private void CreateLocked()
    {
        if (OperatingSystem.IsWindows())
        {
            // Windows takes the share mode as it opens the file, and a folder with a file open in it cannot be renamed.
            Directory.CreateDirectory(_directory);
            _lock = new FileStream(Path.Combine(_directory, LockName), FileMode.CreateNew, FileAccess.Write, FileShare.None);
            return;
        }

        var creating = _directory + CreatingSuffix;
        Directory.CreateDirectory(creating);
        try
        {
            _lock = new FileStream(Path.Combine(creating, LockName), FileMode.CreateNew, FileAccess.Write, FileShare.None);
            Directory.Move(creating, _directory);
        }
        catch
        {
            _lock?.Dispose();
            _lock = null;
            try
            {
                Directory.Delete(creating, recursive: true);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Left for a later sweep, once it is an hour old.
            }

            throw;
        }
    }

    /// <summary>A file of the session's folder is open: the session closes it, if it is still open, before it deletes the folder.</summary>
    public void Opened(IDisposable file) => _open.Add(file);

    /// <summary>
    /// Deletes the spill folders under <paramref name="root"/> that no run holds: left by a process that was killed, so
    /// its own cleanup never ran. A live folder's lock file is open and unshared, so it cannot be opened here.
    /// </summary>
    private void Sweep(string root)
    {
        IEnumerable<string> folders;
        try
        {
            folders = Directory.EnumerateDirectories(root, Prefix + "*").ToList();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return;
        }

        foreach (var folder in folders)
        {
            if (string.Equals(folder, _directory, StringComparison.Ordinal))
            {
                continue;
            }

            try
            {
                // A folder still being made is another run's until it is an hour old: its lock may not be held yet.
                if (folder.EndsWith(CreatingSuffix, StringComparison.Ordinal) && DateTime.UtcNow - Directory.GetLastWriteTimeUtc(folder) < UnlockedAge)
                {
                    continue;
                }

                var lockFile = Path.Combine(folder, LockName);
                if (File.Exists(lockFile))
                {
                    // Throws while the run that made the folder is alive.
                    new FileStream(lockFile, FileMode.Open, FileAccess.ReadWrite, FileShare.None).Dispose();
                }
                else if (DateTime.UtcNow - Directory.GetLastWriteTimeUtc(folder) < UnlockedAge)
                {
                    continue;
                }

                Directory.Delete(folder, recursive: true);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Held by a live run, or not ours to delete.
            }
        }
    }

    /// <summary>A writer or reader was closed: the session no longer closes it.</summary>
    public void Closed(IDisposable file) => _open.Remove(file);

    /// <summary>
    /// Reads a spill file's records back, in the order written, and deletes the file once read (unless
    /// <paramref name="delete"/> is false: it is read again). Stops with <see cref="OperationCanceledException"/> at the
    /// next record once <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    public IEnumerable<(long Ordinal, TValue Value)> Read<TValue>(string file, JsonTypeInfo<TValue> type, bool delete = true, CancellationToken cancellationToken = default)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(4096);
        try
        {
            using (var reader = new BinaryReader(new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16)))
            {
                var stream = reader.BaseStream;
                while (stream.Position < stream.Length)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var ordinal = reader.ReadInt64();
                    var length = reader.ReadInt32();
                    if (buffer.Length < length)
                    {
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = ArrayPool<byte>.Shared.Rent(length);
                    }

                    reader.BaseStream.ReadExactly(buffer, 0, length);
                    TValue value;
                    try
                    {
                        value = JsonSerializer.Deserialize(buffer.AsSpan(0, length), type)!;
                    }
                    catch (Exception ex) when (ex is JsonException or NotSupportedException or InvalidOperationException)
                    {
                        throw Failed<TValue>("read back", ex);
                    }

                    yield return (ordinal, value);
                }
            }

            if (delete)
            {
                File.Delete(file);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Merges files each sorted by ordinal into one sequence sorted by ordinal.</summary>
    public IEnumerable<(long Ordinal, TValue Value)> Merge<TValue>(IReadOnlyList<string> files, JsonTypeInfo<TValue> type, CancellationToken cancellationToken)
    {
        if (files.Count == 1)
        {
            foreach (var record in Read(files[0], type, cancellationToken: cancellationToken))
            {
                yield return record;
            }

            yield break;
        }

        var readers = new List<IEnumerator<(long Ordinal, TValue Value)>>(files.Count);
        try
        {
            var queue = new PriorityQueue<int, long>(files.Count);
            foreach (var file in files)
            {
                var reader = Read(file, type, cancellationToken: cancellationToken).GetEnumerator();
                readers.Add(reader);
                if (reader.MoveNext())
                {
                    queue.Enqueue(readers.Count - 1, reader.Current.Ordinal);
                }
            }

            while (queue.TryDequeue(out var index, out _))
            {
                var reader = readers[index];
                yield return reader.Current;
                if (reader.MoveNext())
                {
                    queue.Enqueue(index, reader.Current.Ordinal);
                }
            }
        }
        finally
        {
            foreach (var reader in readers)
            {
                reader.Dispose();
            }
        }
    }

    public EtlSpillException Failed<TValue>(string what, Exception inner) =>
        new(
            string.Create(
                CultureInfo.InvariantCulture,
                $"ETL job '{_run.Job}': the {Stage} stage passed its memory budget ({_parameter}) and could not {what} a {typeof(TValue).FullName} in its spill file: {inner.Message} Make the type one System.Text.Json can write and read back (public properties or fields, a constructor it can bind), pass spill: new EtlSpill {{ SerializerOptions = ... }} that can, or raise {_parameter}."),
            inner)
        {
            Stage = Stage,
            RowType = typeof(TValue),
        };

    public void Dispose()
    {
        // Writers of a pass the run left unfinished (a failure, a cancellation) are closed first: on Windows and some
        // network file systems a folder with open files cannot be deleted, and on Linux their handles would leak.
        foreach (var writer in _open.ToArray())
        {
            writer.Dispose();
        }

        _open.Clear();
        if (!_created)
        {
            _lock?.Dispose();
            _lock = null;
            return;
        }

        _created = false;
        var lockFile = Path.Combine(_directory, LockName);
        try
        {
            // The files go first, while the lock is held: a sweep leaves the folder alone until the lock is released.
            foreach (var entry in Directory.EnumerateFileSystemEntries(_directory).ToList())
            {
                if (string.Equals(entry, lockFile, StringComparison.Ordinal))
                {
                    continue;
                }

                if (Directory.Exists(entry))
                {
                    Directory.Delete(entry, recursive: true);
                }
                else
                {
                    File.Delete(entry);
                }
            }
        }
        catch (DirectoryNotFoundException)
        {
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Cleanup does not replace the run's outcome: the folder is left for a later spill's sweep.
            EtlLog.SpillCleanupFailed(_run.Logger, ex, _run.Job, _directory);
        }
        finally
        {
            _lock?.Dispose();
            _lock = null;
        }

        try
        {
            // Only the lock file is left. A sweep may take it now and delete the folder first: either way it goes.
            File.Delete(lockFile);
            Directory.Delete(_directory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A sweep is deleting it, or it is left, empty but for its free lock file, for a later sweep.
        }
    }
}

/// <summary>Writes records (an ordinal and a value as JSON) to one spill file.</summary>
internal sealed class EtlSpillWriter<TValue> : IDisposable
{
    private readonly EtlSpillSession _session;
    private readonly JsonTypeInfo<TValue> _type;
    private readonly FileStream _file;
    private readonly ArrayBufferWriter<byte> _buffer = new(256);
    private readonly Utf8JsonWriter _json;
    private readonly byte[] _header = new byte[12];

    public EtlSpillWriter(EtlSpillSession session, string path, JsonTypeInfo<TValue> type)
    {
        _session = session;
        _type = type;
        Path = path;
        _file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        _json = new Utf8JsonWriter(_buffer);
    }

    public string Path { get; }

    public void Write(long ordinal, TValue value)
    {
        _buffer.ResetWrittenCount();
        _json.Reset(_buffer);
        try
        {
            JsonSerializer.Serialize(_json, value, _type);
            _json.Flush();
        }
        catch (Exception ex) when (ex is NotSupportedException or InvalidOperationException or JsonException or ArgumentException)
        {
            throw _session.Failed<TValue>("write", ex);
        }

        BinaryPrimitives.WriteInt64LittleEndian(_header, ordinal);
        BinaryPrimitives.WriteInt32LittleEndian(_header.AsSpan(8), _buffer.WrittenCount);
        _file.Write(_header);
        _file.Write(_buffer.WrittenSpan);
    }

    public void Dispose()
    {
        _session.Closed(this);
        _json.Dispose();
        _file.Dispose();
    }
}
